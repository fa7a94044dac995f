"""What every wire format shares: input tensors → one validated float64 matrix, and a
prediction → the output tensors of `serving.metadata.OUTPUTS`.

One validation pass, numpy only (no pandas, no per-value Python loop): every malformed
request raises `InvalidRequest` saying what was wrong and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

from serving.errors import InvalidRequest, quoted
from serving.loader import Prediction
from serving.metadata import FEATURES, OUTPUT_NAMES, OUTPUTS, ModelSpec

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
    binary_outputs: frozenset[str] = frozenset()
    """Outputs to return as raw bytes (the binary tensor extension), not JSON."""


@dataclass(frozen=True)
class Output:
    """One output tensor of an answer, before a wire format encodes it."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray[Any, Any] | list[str]
    """Flat, in row-major order: a numpy array, or the strings of a BYTES tensor."""


_OUTPUTS = {o.name: o for o in OUTPUTS}


def output_tensors(prediction: Prediction, names: Sequence[str]) -> list[Output]:
    """The requested outputs of `prediction`, in order, as `OUTPUTS` defines them."""
    tensors = []
    for name in names:
        spec = _OUTPUTS[name]
        values = getattr(prediction, spec.field)
        if spec.per_class:
            tensors.append(Output(name, spec.datatype, list(values.shape), values.ravel()))
        else:
            tensors.append(Output(name, spec.datatype, [len(values)], values))
    return tensors


def requested_outputs(names: Sequence[str] | None) -> tuple[str, ...]:
    if not names:
        return _ALL_OUTPUTS
    unknown = [n for n in names if n not in _ALL_OUTPUTS]
    if unknown:
        raise InvalidRequest(
            f"unknown output {quoted(unknown[0])}; this model returns {', '.join(_ALL_OUTPUTS)}"
        )
    return tuple(dict.fromkeys(names))


def example_body(spec: ModelSpec) -> str:
    return (
        f'{{"inputs": [{{"name": "features", "shape": [N, {spec.n_features}], '
        '"datatype": "FP64", "data": [...]}]}'
    )


# --- tensors → matrix (shared by REST JSON, REST binary and gRPC) ---------------------------


def assemble(tensors: Sequence[Tensor], spec: ModelSpec, max_batch: int) -> FloatMatrix:
    """One `features` tensor `[N, F]`, or one `[N]` tensor per signature column."""
    for tensor in tensors:
        _check_shape(tensor)
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise InvalidRequest(f"input tensors must have distinct names, got {quoted(names)}")
    if FEATURES in names:
        if len(tensors) > 1:
            others = quoted([n for n in names if n != FEATURES])
            raise InvalidRequest(
                f"send either one 'features' tensor or one tensor per column, not both "
                f"(also got {others})"
            )
        return _features_tensor(tensors[0], spec, max_batch)
    columns = spec.feature_names
    unknown = [n for n in names if columns is None or n not in columns]
    if unknown:
        raise InvalidRequest(
            f"unknown input tensor {quoted(unknown[0])}; expected 'features' with shape "
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
            f"input 'features' has shape {quoted(shape)}; expected [N, {spec.n_features}] "
            f"(N rows of the model's {spec.n_features} features)"
        )
    rows = shape[0]
    check_batch(rows, max_batch)
    return finite(tensor_values(tensor, (rows, spec.n_features)), spec)


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
            raise InvalidRequest(
                f"input {quoted(tensor.name)} has shape {quoted(shape)}; expected [N]"
            )
        if rows is None:
            rows = shape[0]
            check_batch(rows, max_batch)
        elif shape[0] != rows:
            raise InvalidRequest(
                f"input {quoted(tensor.name)} has {shape[0]} rows but the first column has "
                f"{rows}: every column needs the same N"
            )
    assert rows is not None
    matrix = np.empty((rows, len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        matrix[:, j] = tensor_values(given[column], (rows,))
    return finite(matrix, spec)


def _check_shape(tensor: Tensor) -> None:
    # JSON shapes are checked as they are read; gRPC and binary shapes are int64s.
    if any(d < 0 for d in tensor.shape):
        raise InvalidRequest(
            f"input {quoted(tensor.name)} has shape {quoted(tensor.shape)}; every dimension "
            "must be a non-negative integer (N rows, not -1)"
        )


def _check_datatype(tensor: Tensor) -> None:
    if tensor.datatype not in NUMERIC_DATATYPES:
        raise InvalidRequest(
            f"input {quoted(tensor.name)} has datatype {quoted(tensor.datatype)}; expected FP32 "
            "or FP64 (integer types are accepted)"
        )


def check_batch(rows: int, max_batch: int) -> None:
    if rows == 0:
        raise InvalidRequest("the batch is empty (N = 0); send at least one row")
    if rows > max_batch:
        raise InvalidRequest(
            f"the batch has {rows} rows, more than this server's maximum of {max_batch} "
            "(MAX_BATCH_SIZE); split it into smaller requests"
        )


def tensor_values(tensor: Tensor, shape: tuple[int, ...]) -> FloatMatrix:
    """The tensor's data as a float64 array of `shape`; one conversion, no Python loop."""
    expected = prod(shape)
    try:
        array = np.asarray(tensor.data)
    except (ValueError, TypeError) as e:  # ragged nesting
        raise InvalidRequest(
            f"data of input {quoted(tensor.name)} is not a regular array of numbers: expected "
            f"{expected} values for shape {quoted(tensor.shape)}"
        ) from e
    if array.size and array.dtype.kind not in _NUMERIC_KINDS:
        raise InvalidRequest(
            f"data of input {quoted(tensor.name)} holds {_kind_name(array)}; expected numbers "
            f"(datatype {tensor.datatype})"
        )
    if array.size != expected:
        raise InvalidRequest(
            f"input {quoted(tensor.name)} has shape {quoted(tensor.shape)}, which needs "
            f"{expected} values, but its data holds {array.size}"
        )
    dtype = np.dtype(NUMERIC_DATATYPES[tensor.datatype])
    if array.dtype != dtype and array.size:
        _check_representable(tensor, array, dtype)
    return array.reshape(shape).astype(np.float64, copy=False)


def _check_representable(tensor: Tensor, array: np.ndarray[Any, Any], dtype: np.dtype[Any]) -> None:
    """Values that came as JSON numbers (or wider gRPC contents) must be values of the
    declared datatype: 1e300 is no FP16, 2.5 no INT64."""
    if dtype.kind == "f":
        if dtype.itemsize < 8:
            limit = float(np.finfo(dtype).max)
            # NaN and infinity pass here: the finite-values check names them.
            beyond = np.abs(array) > limit
            beyond &= np.isfinite(array)
            if beyond.any():
                value = array.ravel()[int(np.argmax(beyond.ravel()))]
                raise InvalidRequest(
                    f"input {quoted(tensor.name)} holds {value}, beyond the range of its "
                    f"datatype {tensor.datatype} (±{limit:.6g}); declare FP64 or scale it"
                )
        return
    if array.dtype.kind == "f":
        whole = np.isfinite(array) & (array == np.round(array))
        if not whole.all():
            value = array.ravel()[int(np.argmin(whole.ravel()))]
            raise InvalidRequest(
                f"input {quoted(tensor.name)} holds {value}, which is not an integer as its "
                f"datatype {tensor.datatype} requires; declare FP64 for fractional values"
            )
    info = np.iinfo(dtype)
    low, high = array.min(), array.max()
    if low < info.min or high > info.max:
        value = low if low < info.min else high
        raise InvalidRequest(
            f"input {quoted(tensor.name)} holds {value}, beyond the range of its datatype "
            f"{tensor.datatype} ({info.min} to {info.max})"
        )


def _kind_name(array: np.ndarray[Any, Any]) -> str:
    kind = array.dtype.kind
    if kind in "US":
        return "strings"
    if kind == "b":
        return "booleans"
    return "nulls or mixed values"


def finite(matrix: FloatMatrix, spec: ModelSpec) -> FloatMatrix:
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
