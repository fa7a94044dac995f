"""V2 (and V1) requests → one validated float64 matrix; predictions → V2 responses.

One validation pass, numpy only (no pandas, no per-value Python loop): every malformed
request raises `InvalidRequest` saying what was wrong and what was expected.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np
import orjson

from serving.errors import InvalidRequest
from serving.loader import Prediction
from serving.metadata import CLASS_NAME, FEATURES, LABEL, OUTPUT_NAMES, PROBABILITIES, ModelSpec

FloatMatrix = np.ndarray[Any, np.dtype[np.float64]]

# V2 datatypes a feature tensor may carry, and their little-endian numpy types (for
# gRPC raw contents). Booleans and strings are not features.
NUMERIC_DATATYPES: dict[str, str] = {
    "FP64": "<f8",
    "FP32": "<f4",
    "FP16": "<f2",
    "INT64": "<i8",
    "INT32": "<i4",
    "INT16": "<i2",
    "INT8": "i1",
    "UINT64": "<u8",
    "UINT32": "<u4",
    "UINT16": "<u2",
    "UINT8": "u1",
}
_NUMERIC_KINDS = frozenset("fiu")
_ALL_OUTPUTS = OUTPUT_NAMES


@dataclass(frozen=True)
class Tensor:
    """An input tensor as the wire gave it, before validation."""

    name: str
    datatype: str
    shape: list[int]
    data: Any
    """A (nested) list from JSON, or a 1-D numpy array from gRPC."""


@dataclass(frozen=True)
class DecodedRequest:
    features: FloatMatrix
    """`[rows, n_features]`, float64, every value finite."""
    outputs: tuple[str, ...]
    """Output tensors to return, in order."""
    request_id: str | None = None


def example_body(spec: ModelSpec) -> str:
    return (
        f'{{"inputs": [{{"name": "features", "shape": [N, {spec.n_features}], '
        '"datatype": "FP64", "data": [...]}]}'
    )


# --- JSON ----------------------------------------------------------------------------------


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


def requested_outputs(names: Sequence[str] | None) -> tuple[str, ...]:
    if not names:
        return _ALL_OUTPUTS
    unknown = [n for n in names if n not in _ALL_OUTPUTS]
    if unknown:
        raise InvalidRequest(
            f"unknown output {unknown[0]!r}; this model returns {', '.join(_ALL_OUTPUTS)}"
        )
    return tuple(dict.fromkeys(names))


def encode_v2(
    prediction: Prediction,
    outputs: tuple[str, ...],
    model_name: str,
    model_version: str,
    request_id: str | None = None,
) -> bytes:
    """The V2 REST response body (tensor data flattened in row-major order)."""
    rows = len(prediction.labels)
    tensors: list[dict[str, Any]] = []
    for name in outputs:
        if name == LABEL:
            tensors.append(
                {"name": LABEL, "datatype": "INT64", "shape": [rows], "data": prediction.labels}
            )
        elif name == PROBABILITIES:
            probabilities = prediction.probabilities
            tensors.append(
                {
                    "name": PROBABILITIES,
                    "datatype": "FP64",
                    "shape": list(probabilities.shape),
                    "data": probabilities.ravel(),
                }
            )
        else:
            tensors.append(
                {
                    "name": CLASS_NAME,
                    "datatype": "BYTES",
                    "shape": [rows],
                    "data": prediction.class_names,
                }
            )
    body: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        body["id"] = request_id
    body["outputs"] = tensors
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


# --- V1 --------------------------------------------------------------------------------


def decode_v1(payload: Any, spec: ModelSpec, max_batch: int) -> FloatMatrix:
    """KServe's V1 body: `{"instances": [[f1, ..., fn], ...]}`, or rows as objects
    keyed by the signature's column names."""
    values = ", ".join(["f"] * min(spec.n_features, 3) + ["..."])
    example = f'{{"instances": [[{values}]]}}'
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidRequest(f"a V1 request needs 'instances', e.g. {example}")
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise InvalidRequest(f"'instances' must be a list of rows, e.g. {example}")
    rows = len(instances)
    _check_batch(rows, max_batch)
    if all(isinstance(row, dict) for row in instances):
        names = spec.feature_names
        if names is None:
            raise InvalidRequest(
                f"this model's features have no names: send rows as lists, e.g. {example}"
            )
        try:
            instances = [[row[n] for n in names] for row in instances]
        except KeyError as e:
            raise InvalidRequest(f"an instance lacks feature {e.args[0]!r}") from e
    tensor = Tensor("instances", "FP64", [rows, spec.n_features], instances)
    return _finite(_values(tensor, (rows, spec.n_features)), spec)


def encode_v1(prediction: Prediction, model_name: str, model_version: str) -> dict[str, Any]:
    return {
        "model_name": model_name,
        "model_version": model_version,
        "predictions": [
            {LABEL: label, CLASS_NAME: name, PROBABILITIES: probabilities}
            for label, name, probabilities in zip(
                prediction.labels.tolist(),
                prediction.class_names,
                prediction.probabilities.tolist(),
                strict=True,
            )
        ],
    }


# --- tensors → matrix (shared by REST JSON, REST binary and gRPC) ---------------------------


def assemble(tensors: Sequence[Tensor], spec: ModelSpec, max_batch: int) -> FloatMatrix:
    """One `features` tensor `[N, F]`, or one `[N]` tensor per signature column."""
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise InvalidRequest(f"input tensors must have distinct names, got {names}")
    if FEATURES in names:
        if len(tensors) > 1:
            others = ", ".join(repr(n) for n in names if n != FEATURES)
            raise InvalidRequest(
                f"send either one 'features' tensor or one tensor per column, not both "
                f"(also got {others})"
            )
        return _features_tensor(tensors[0], spec, max_batch)
    columns = spec.feature_names
    unknown = [n for n in names if columns is None or n not in columns]
    if unknown:
        raise InvalidRequest(
            f"unknown input tensor {unknown[0]!r}; expected 'features' with shape "
            f"[N, {spec.n_features}]{_column_hint(spec)}"
        )
    assert columns is not None
    return _column_tensors(tensors, columns, spec, max_batch)


def _column_hint(spec: ModelSpec) -> str:
    if spec.feature_names is None:
        return ""
    shown = ", ".join(repr(n) for n in spec.feature_names[:3])
    return (
        f", or one [N] tensor per signature column ({shown}, ... "
        f"{spec.n_features} in all; GET /v2/models/<name> lists them)"
    )


def _features_tensor(tensor: Tensor, spec: ModelSpec, max_batch: int) -> FloatMatrix:
    _check_datatype(tensor)
    shape = tensor.shape
    if len(shape) != 2 or shape[1] != spec.n_features:
        raise InvalidRequest(
            f"input 'features' has shape {shape}; expected [N, {spec.n_features}] "
            f"(N rows of the model's {spec.n_features} features)"
        )
    rows = shape[0]
    _check_batch(rows, max_batch)
    return _finite(_values(tensor, (rows, spec.n_features)), spec)


def _column_tensors(
    tensors: Sequence[Tensor], columns: tuple[str, ...], spec: ModelSpec, max_batch: int
) -> FloatMatrix:
    given = {t.name: t for t in tensors}
    missing = [c for c in columns if c not in given]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:3])
        raise InvalidRequest(
            f"per-column input lacks {len(missing)} of the {len(columns)} columns ({shown}"
            f"{', ...' if len(missing) > 3 else ''}); send all of them, or one 'features' tensor"
        )
    rows = None
    for tensor in tensors:
        _check_datatype(tensor)
        shape = tensor.shape
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise InvalidRequest(f"input {tensor.name!r} has shape {shape}; expected [N]")
        if rows is None:
            rows = shape[0]
            _check_batch(rows, max_batch)
        elif shape[0] != rows:
            raise InvalidRequest(
                f"input {tensor.name!r} has {shape[0]} rows but the first column has {rows}: "
                "every column needs the same N"
            )
    assert rows is not None
    matrix = np.empty((rows, len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        matrix[:, j] = _values(given[column], (rows,))
    return _finite(matrix, spec)


def _check_datatype(tensor: Tensor) -> None:
    if tensor.datatype not in NUMERIC_DATATYPES:
        raise InvalidRequest(
            f"input {tensor.name!r} has datatype {tensor.datatype!r}; expected FP32 or FP64 "
            "(integer types are accepted)"
        )


def _check_batch(rows: int, max_batch: int) -> None:
    if rows == 0:
        raise InvalidRequest("the batch is empty (N = 0); send at least one row")
    if rows > max_batch:
        raise InvalidRequest(
            f"the batch has {rows} rows, more than this server's maximum of {max_batch} "
            "(MAX_BATCH_SIZE); split it into smaller requests"
        )


def _values(tensor: Tensor, shape: tuple[int, ...]) -> FloatMatrix:
    """The tensor's data as a float64 array of `shape`; one conversion, no Python loop."""
    expected = prod(shape)
    try:
        array = np.asarray(tensor.data)
    except (ValueError, TypeError) as e:  # ragged nesting
        raise InvalidRequest(
            f"data of input {tensor.name!r} is not a regular array of numbers: expected "
            f"{expected} values for shape {list(tensor.shape)}"
        ) from e
    if array.size and array.dtype.kind not in _NUMERIC_KINDS:
        raise InvalidRequest(
            f"data of input {tensor.name!r} holds {_kind_name(array)}; expected numbers "
            f"(datatype {tensor.datatype})"
        )
    if array.size != expected:
        raise InvalidRequest(
            f"input {tensor.name!r} has shape {list(tensor.shape)}, which needs {expected} "
            f"values, but its data holds {array.size}"
        )
    return array.reshape(shape).astype(np.float64, copy=False)


def _kind_name(array: np.ndarray[Any, Any]) -> str:
    kind = array.dtype.kind
    if kind in "US":
        return "strings"
    if kind == "b":
        return "booleans"
    return "nulls or mixed values"


def _finite(matrix: FloatMatrix, spec: ModelSpec) -> FloatMatrix:
    if np.isfinite(matrix).all():
        return matrix
    row, column = (int(i) for i in np.argwhere(~np.isfinite(matrix))[0])
    name = f"feature {column}"
    if spec.feature_names is not None and matrix.ndim == 2 and column < len(spec.feature_names):
        name = f"feature {column} ({spec.feature_names[column]!r})"
    raise InvalidRequest(
        f"row {row}, {name} is {matrix[row, column]}: every value must be a finite number "
        "(no NaN or infinity)"
    )
