"""The model's MLflow signature → what the V2 protocol says about it.

Nothing here is kept by hand: the feature columns, their count and datatype come from
the signature in the `MLmodel` file; the class names from its metadata (or the
estimator). The signature is read from its serialized JSON form, so MLflow need not be
imported to serve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from serving.errors import InvalidModel

FEATURES = "features"
LABEL = "label"
PROBABILITIES = "probabilities"
CLASS_NAME = "class_name"
PLATFORM = "scikit-learn"


@dataclass(frozen=True)
class OutputTensor:
    """One output tensor of every answer: the one table the V2 metadata and every
    encoder (JSON, binary, gRPC, KServe's InferResponse) are written from."""

    name: str
    datatype: str
    field: str
    """The `serving.loader.Prediction` attribute holding its values."""
    per_class: bool = False
    """Shape `[rows, n_classes]` rather than `[rows]`."""


OUTPUTS = (
    OutputTensor(LABEL, "INT64", "labels"),
    OutputTensor(PROBABILITIES, "FP64", "probabilities", per_class=True),
    OutputTensor(CLASS_NAME, "BYTES", "class_names"),
)
OUTPUT_NAMES = tuple(o.name for o in OUTPUTS)

# MLflow column types and tensor dtypes → V2 datatypes (numeric ones only: the
# predictor feeds one float64 matrix to the estimator).
_COLUMN_TYPES = {"double": "FP64", "float": "FP32", "long": "INT64", "integer": "INT32"}
_TENSOR_TYPES = {
    "float64": "FP64",
    "float32": "FP32",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "int16": "INT16",
    "int8": "INT8",
    "uint64": "UINT64",
    "uint32": "UINT32",
    "uint16": "UINT16",
    "uint8": "UINT8",
}


@dataclass(frozen=True)
class ModelSpec:
    """The V2 view of one model: what goes in, what comes out."""

    n_features: int
    input_datatype: str
    """V2 datatype of `features` as the signature declares it (FP64 for double columns)."""
    feature_names: tuple[str, ...] | None
    """Column names in training order; per-column input tensors need them."""
    class_names: tuple[str, ...]
    """`class_names[i]` is the name of label `i`."""

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def inputs(self) -> list[dict[str, Any]]:
        return [{"name": FEATURES, "datatype": self.input_datatype, "shape": [-1, self.n_features]}]

    def outputs(self) -> list[dict[str, Any]]:
        return [
            {
                "name": o.name,
                "datatype": o.datatype,
                "shape": [-1, self.n_classes] if o.per_class else [-1],
            }
            for o in OUTPUTS
        ]


def spec_from_mlmodel(mlmodel: dict[str, Any], estimator: Any) -> ModelSpec:
    """Derive the spec from a parsed `MLmodel` file and the loaded estimator.

    Raises `InvalidModel` when the signature is missing or cannot be served.
    """
    signature = mlmodel.get("signature") or {}
    raw_inputs = signature.get("inputs")
    if not raw_inputs:
        raise InvalidModel(
            "the model has no input signature; log it with one (mlflow infer_signature), "
            "the predictor derives its V2 inputs from it"
        )
    try:
        inputs = json.loads(raw_inputs) if isinstance(raw_inputs, str) else raw_inputs
    except json.JSONDecodeError as e:
        raise InvalidModel(f"the model's input signature is not valid JSON: {e}") from e
    if not isinstance(inputs, list) or not inputs:
        raise InvalidModel("the model's input signature is empty")

    if all(spec.get("type") == "tensor" for spec in inputs):
        n_features, datatype, names = _from_tensor_spec(inputs)
    else:
        n_features, datatype, names = _from_column_spec(inputs)

    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and int(expected) != n_features:
        raise InvalidModel(
            f"the signature has {n_features} features but the estimator was fitted on {expected}"
        )
    return ModelSpec(
        n_features=n_features,
        input_datatype=datatype,
        feature_names=names,
        class_names=_class_names(mlmodel, estimator),
    )


def _from_column_spec(columns: list[dict[str, Any]]) -> tuple[int, str, tuple[str, ...] | None]:
    types = []
    for column in columns:
        kind = column.get("type")
        if kind not in _COLUMN_TYPES:
            raise InvalidModel(
                f"signature column {column.get('name')!r} has type {kind!r}; the predictor "
                f"serves numeric features only ({', '.join(_COLUMN_TYPES)})"
            )
        types.append(_COLUMN_TYPES[kind])
    names = [column.get("name") for column in columns]
    has_names = all(isinstance(n, str) and n for n in names) and len(set(names)) == len(names)
    datatype = types[0] if len(set(types)) == 1 else "FP64"
    return len(columns), datatype, tuple(str(n) for n in names) if has_names else None


def _from_tensor_spec(tensors: list[dict[str, Any]]) -> tuple[int, str, None]:
    if len(tensors) != 1:
        raise InvalidModel(f"the signature has {len(tensors)} input tensors; expected one")
    spec = tensors[0].get("tensor-spec") or {}
    shape = spec.get("shape") or []
    dtype = str(spec.get("dtype"))
    if len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < 1:
        raise InvalidModel(f"the input tensor has shape {shape}; expected [-1, n_features]")
    if dtype not in _TENSOR_TYPES:
        raise InvalidModel(f"the input tensor has dtype {dtype}; expected a numeric dtype")
    return int(shape[1]), _TENSOR_TYPES[dtype], None


def _class_names(mlmodel: dict[str, Any], estimator: Any) -> tuple[str, ...]:
    classes = getattr(estimator, "classes_", None)
    if classes is None or not hasattr(estimator, "predict_proba"):
        raise InvalidModel("the estimator is not a fitted classifier with predict_proba")
    declared = (mlmodel.get("metadata") or {}).get("class_names")
    names = [str(c) for c in declared] if declared else [str(c) for c in classes]
    if len(names) != len(classes):
        raise InvalidModel(
            f"metadata names {len(names)} classes but the estimator has {len(classes)}"
        )
    return tuple(names)
