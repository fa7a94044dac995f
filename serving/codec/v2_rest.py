"""V2 REST bodies: JSON, and JSON followed by raw tensors (the binary tensor extension,
`serving.codec.binary`), decoded by one function and encoded by another."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson

from serving.codec.binary import raw_output, raw_tensor
from serving.codec.tensors import (
    DecodedRequest,
    Output,
    Tensor,
    assemble,
    example_body,
    output_tensors,
    requested_outputs,
)
from serving.errors import InvalidRequest, quoted
from serving.loader import Prediction
from serving.metadata import ModelSpec

MAX_DEPTH = 64
"""Nesting the standard-library fallback parser may see (a V2 body needs 4 or 5)."""
_WITH_DATA = ("name", "shape", "datatype", "data")
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSE = np.frombuffer(b"]}", dtype=np.uint8)


def parse_json(body: bytes, spec: ModelSpec) -> Any:
    if not body:
        raise InvalidRequest(
            f"the request body is empty; expected JSON such as {example_body(spec)}"
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        invalid = InvalidRequest(
            f"the request body is not valid JSON ({e}); expected {example_body(spec)}"
        )
        # Python clients send NaN and Infinity literals, which JSON forbids: parse them,
        # so the finite-values check can say what is wrong with the data instead. Only
        # then, and only shallow bodies: the standard parser recurses per level.
        if (b"NaN" not in body and b"Infinity" not in body) or _depth(body) > MAX_DEPTH:
            raise invalid from e
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise invalid from e


def _depth(body: bytes) -> int:
    """An upper bound of the body's nesting (brackets inside strings count too), in a
    few vectorised passes instead of a parse."""
    chars = np.frombuffer(body, dtype=np.uint8)
    steps = np.isin(chars, _OPEN).astype(np.int32) - np.isin(chars, _CLOSE)
    return int(np.cumsum(steps).max(initial=0))


def decode_v2(
    payload: Any, spec: ModelSpec, max_batch: int, raw: memoryview | None = None
) -> DecodedRequest:
    """Decode a parsed V2 REST request body; `raw` is what followed its JSON part."""
    if not isinstance(payload, dict):
        raise InvalidRequest(
            f"the request body must be a JSON object with 'inputs'; expected {example_body(spec)}"
        )
    inputs = payload.get("inputs")
    if inputs is None:
        raise InvalidRequest(f"the request has no 'inputs'; expected {example_body(spec)}")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest(
            f"'inputs' must be a non-empty list of tensors; expected {example_body(spec)}"
        )
    parameters = _parameters(payload, "the request")
    tail = _RawTail(raw)
    tensors = [_json_tensor(i, item, tail) for i, item in enumerate(inputs)]
    tail.check_consumed()
    request_id = payload.get("id")
    if request_id is not None:
        _check_text(request_id, "'id'")
    binary_default = _flag(parameters, "binary_data_output", "the request's parameters")
    outputs, binary = _json_outputs(payload.get("outputs"), binary_default)
    return DecodedRequest(
        features=assemble(tensors, spec, max_batch),
        outputs=outputs,
        request_id=request_id,
        binary_outputs=binary,
    )


class _RawTail:
    """The raw bytes after the JSON part, handed out in the order inputs name them."""

    def __init__(self, raw: memoryview | None) -> None:
        self.raw = raw if raw is not None else memoryview(b"")
        self.offset = 0

    def take(self, name: str, size: Any) -> memoryview:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidRequest(
                f"input {quoted(name)}: parameters.binary_data_size is {quoted(size)}; "
                "expected the non-negative byte count of its raw data"
            )
        left = len(self.raw) - self.offset
        if size > left:
            raise InvalidRequest(
                f"input {quoted(name)} declares binary_data_size {size}, but only {left} raw "
                "bytes follow the JSON part (Inference-Header-Content-Length gives its length)"
            )
        part = self.raw[self.offset : self.offset + size]
        self.offset += size
        return part

    def check_consumed(self) -> None:
        left = len(self.raw) - self.offset
        if left:
            raise InvalidRequest(
                f"{left} raw bytes after the JSON part belong to no input: each input sent "
                "as raw data declares its parameters.binary_data_size"
            )


def _json_tensor(index: int, item: Any, tail: _RawTail) -> Tensor:
    if not isinstance(item, dict):
        raise InvalidRequest(
            f"inputs[{index}] must be an object with name, shape, datatype and data"
        )
    parameters = _parameters(item, f"inputs[{index}]")
    binary_size = parameters.get("binary_data_size")
    needed = ("name", "shape", "datatype") if binary_size is not None else _WITH_DATA
    missing = [key for key in needed if key not in item]
    if missing:
        raise InvalidRequest(
            f"inputs[{index}] lacks {', '.join(repr(k) for k in missing)}; each input tensor "
            "needs name, shape, datatype and data (or parameters.binary_data_size)"
        )
    name, shape, datatype = item["name"], item["shape"], item["datatype"]
    if not isinstance(name, str):
        raise InvalidRequest(f"inputs[{index}].name must be a string")
    if not isinstance(datatype, str):
        raise InvalidRequest(f'input {quoted(name)}: datatype must be a string such as "FP64"')
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidRequest(
            f"input {quoted(name)}: shape must be a list of non-negative integers, "
            f"got {quoted(shape)}"
        )
    if binary_size is None:
        return Tensor(name=name, datatype=datatype, shape=shape, data=item["data"])
    if "data" in item:
        raise InvalidRequest(
            f"input {quoted(name)} has both 'data' and parameters.binary_data_size; "
            "send its values one way"
        )
    data = raw_tensor(name, datatype, shape, tail.take(name, binary_size))
    return Tensor(name=name, datatype=datatype, shape=shape, data=data)


def _parameters(item: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = item.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidRequest(
            f"{where}: 'parameters' must be an object, got {type(parameters).__name__}"
        )
    return parameters


def _flag(parameters: dict[str, Any], key: str, where: str) -> bool | None:
    value = parameters.get(key)
    if value is not None and not isinstance(value, bool):
        raise InvalidRequest(f"{where}: {key} must be true or false, got {quoted(value)}")
    return value


def _check_text(value: Any, what: str) -> None:
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be a string, got {type(value).__name__}")
    try:
        value.encode()
    except UnicodeEncodeError as e:  # a lone surrogate, from a \\ud800 escape
        raise InvalidRequest(f"{what} is not valid Unicode text ({quoted(value)})") from e


def _json_outputs(
    outputs: Any, binary_default: bool | None
) -> tuple[tuple[str, ...], frozenset[str]]:
    """The requested outputs, and those of them to send as raw bytes (an output's
    `binary_data` overrides the request's `binary_data_output`)."""
    if outputs is None:
        names = requested_outputs(None)
        return names, frozenset(names if binary_default else ())
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise InvalidRequest(
            "'outputs' must be a list of objects with a 'name', e.g. [{\"name\": \"label\"}]"
        )
    binary = set()
    for index, output in enumerate(outputs):
        where = f"outputs[{index}]"
        flag = _flag(_parameters(output, where), "binary_data", f"{where}.parameters")
        if flag or (flag is None and binary_default):
            binary.add(output["name"])
    return requested_outputs([o["name"] for o in outputs]), frozenset(binary)


def encode_v2(
    prediction: Prediction, decoded: DecodedRequest, model_name: str, model_version: str
) -> tuple[bytes, int | None]:
    """The V2 REST response body (tensor data flattened in row-major order), and the
    length of its JSON part when raw outputs follow it (None for JSON alone)."""
    body: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if decoded.request_id is not None:
        body["id"] = decoded.request_id
    tensors = output_tensors(prediction, decoded.outputs)
    raw = [raw_output(t) if t.name in decoded.binary_outputs else None for t in tensors]
    body["outputs"] = [_json_output(t, r) for t, r in zip(tensors, raw, strict=True)]
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    parts = [r for r in raw if r is not None]
    if not parts:
        return header, None
    return b"".join([header, *parts]), len(header)


def _json_output(tensor: Output, raw: bytes | None) -> dict[str, Any]:
    output: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": tensor.shape,
    }
    if raw is None:
        output["data"] = tensor.data
    else:
        output["parameters"] = {"binary_data_size": len(raw)}
    return output
