"""The V2 metadata comes from the model's MLflow signature, never kept by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from serving.errors import InvalidModel
from serving.loader import read_mlmodel
from serving.metadata import ModelSpec, spec_from_mlmodel

FITTED = SimpleNamespace(classes_=np.array([0, 1]), n_features_in_=2, predict_proba=None)


def mlmodel(inputs: Any, class_names: list[str] | None = None) -> dict[str, Any]:
    signature = {"inputs": json.dumps(inputs) if inputs is not None else None}
    metadata = {"class_names": class_names} if class_names else None
    return {"signature": signature, "metadata": metadata}


def column(name: str, kind: str = "double") -> dict[str, Any]:
    return {"type": kind, "name": name, "required": True}


def test_named_double_columns_give_fp64_features_and_column_names() -> None:
    spec = spec_from_mlmodel(mlmodel([column("a"), column("b")], ["no", "yes"]), FITTED)

    assert spec == ModelSpec(
        n_features=2, input_datatype="FP64", feature_names=("a", "b"), class_names=("no", "yes")
    )
    assert spec.inputs() == [{"name": "features", "datatype": "FP64", "shape": [-1, 2]}]
    assert spec.outputs() == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
        {"name": "class_name", "datatype": "BYTES", "shape": [-1]},
    ]


def test_float_columns_give_fp32_and_mixed_numeric_columns_fp64() -> None:
    assert (
        spec_from_mlmodel(
            mlmodel([column("a", "float"), column("b", "float")]), FITTED
        ).input_datatype
        == "FP32"
    )
    assert (
        spec_from_mlmodel(
            mlmodel([column("a", "float"), column("b", "long")]), FITTED
        ).input_datatype
        == "FP64"
    )


def test_a_tensor_signature_gives_features_without_column_names() -> None:
    inputs = [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 2]}}]

    spec = spec_from_mlmodel(mlmodel(inputs), FITTED)

    assert (spec.n_features, spec.input_datatype, spec.feature_names) == (2, "FP32", None)


def test_class_names_fall_back_to_the_estimator_classes() -> None:
    assert spec_from_mlmodel(mlmodel([column("a"), column("b")]), FITTED).class_names == ("0", "1")


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (mlmodel(None), "has no input signature"),
        (
            mlmodel([column("a"), column("b", "string")]),
            "type 'string'; the predictor serves numeric",
        ),
        (
            mlmodel([column("a"), column("b"), column("c")]),
            "3 features but the estimator was fitted on 2",
        ),
        (
            mlmodel([column("a"), column("b")], ["one", "two", "three"]),
            "names 3 classes but the estimator has 2",
        ),
        (
            mlmodel([{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1]}}]),
            "expected [-1, n_features]",
        ),
    ],
)
def test_signatures_that_cannot_be_served_are_invalid_models(
    model: dict[str, Any], expected: str
) -> None:
    with pytest.raises(InvalidModel, match=re.escape(expected)):
        spec_from_mlmodel(model, FITTED)


def test_the_saved_breast_cancer_model_has_30_named_features(
    serving_saved_models: dict[str, Path],
) -> None:
    import skops.io

    from contract.model_format import TRUSTED_TYPES

    folder = serving_saved_models["logreg"]
    estimator = skops.io.load(folder / "model.skops", trusted=list(TRUSTED_TYPES))

    spec = spec_from_mlmodel(read_mlmodel(folder), estimator)

    assert (spec.n_features, spec.input_datatype) == (30, "FP64")
    assert spec.feature_names is not None and spec.feature_names[:2] == (
        "mean radius",
        "mean texture",
    )
    assert spec.class_names == ("malignant", "benign")
