"""V2 REST bodies (JSON): parse and decode a request, encode the answer."""

from __future__ import annotations

import json
from typing import Any

import orjson

from serving.codec.tensors import (
    DecodedRequest,
    Output,
    Tensor,
    assemble,
    example_body,
    output_tensors,
    requested_outputs,
)
from serving.errors import InvalidRequest
from serving.loader import Prediction
from serving.metadata import ModelSpec


def parse_json(body: bytes, spec: ModelSpec) -> Any:
    if not body:
        raise InvalidRequest(
            f"the request body is empty; expected JSON such as {example_body(spec)}"
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        # Python clients send NaN and Infinity literals, which JSON forbids: parse them,
        # so the finite-values check can say what is wrong with the data instead.
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequest(
                f"the request body is not valid JSON ({e}); expected {example_body(spec)}"
            ) from e


def decode_v2(payload: Any, spec: ModelSpec, max_batch: int) -> DecodedRequest:
    """Decode a parsed V2 REST request body."""
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
    tensors = [_json_tensor(i, item) for i, item in enumerate(inputs)]
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequest(f"'id' must be a string, got {type(request_id).__name__}")
    return DecodedRequest(
        features=assemble(tensors, spec, max_batch),
        outputs=requested_outputs(_json_output_names(payload.get("outputs"))),
        request_id=request_id,
    )


def _json_tensor(index: int, item: Any) -> Tensor:
    if not isinstance(item, dict):
        raise InvalidRequest(
            f"inputs[{index}] must be an object with name, shape, datatype and data"
        )
    missing = [key for key in ("name", "shape", "datatype", "data") if key not in item]
    if missing:
        raise InvalidRequest(
            f"inputs[{index}] lacks {', '.join(repr(k) for k in missing)}; each input tensor "
            "needs name, shape, datatype and data"
        )
    name, shape, datatype = item["name"], item["shape"], item["datatype"]
    if not isinstance(name, str):
        raise InvalidRequest(f"inputs[{index}].name must be a string")
    if not isinstance(datatype, str):
        raise InvalidRequest(f"input '{name}': datatype must be a string such as \"FP64\"")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidRequest(
            f"input '{name}': shape must be a list of non-negative integers, got {shape!r}"
        )
    return Tensor(name=name, datatype=datatype, shape=shape, data=item["data"])


def _json_output_names(outputs: Any) -> list[str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise InvalidRequest(
            "'outputs' must be a list of objects with a 'name', e.g. [{\"name\": \"label\"}]"
        )
    return [o["name"] for o in outputs]


def encode_v2(
    prediction: Prediction,
    outputs: tuple[str, ...],
    model_name: str,
    model_version: str,
    request_id: str | None = None,
) -> bytes:
    """The V2 REST response body (tensor data flattened in row-major order)."""
    body: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        body["id"] = request_id
    body["outputs"] = [_json_output(t) for t in output_tensors(prediction, outputs)]
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _json_output(tensor: Output) -> dict[str, Any]:
    return {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": tensor.shape,
        "data": tensor.data,
    }
