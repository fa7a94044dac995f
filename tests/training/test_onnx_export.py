"""ONNX conversion and the parity gate, on every family and on three datasets, run with
the real skl2onnx and ONNX Runtime."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from contract.onnx_format import (
    FAILED,
    NOT_CONVERTED,
    ONNX,
    ONNX_FILE,
    PASSED,
    SKLEARN,
    OnnxClassifier,
    OnnxRecord,
    sha256_of,
)
from training.candidates import build_candidates
from training.data import Dataset, load_dataset
from training.onnx_export import check_parity, convert, export

FAMILIES = ("logreg", "random_forest", "hist_gradient_boosting")


def write_csv(path: Path) -> Path:
    """A CSV dataset of four columns and three string classes, some rows integers."""
    rng = np.random.default_rng(3)
    rows = ["a,b,c,d,target"]
    for i in range(240):
        label = ("low", "mid", "high")[i % 3]
        centre = {"low": 0.0, "mid": 1.5, "high": 3.0}[label]
        a, b, c = rng.normal(centre, 1.0, 3)
        rows.append(f"{a:.4f},{b:.3f},{c:.5f},{i % 7},{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


@cache
def fitted(dataset: str, family: str) -> tuple[Any, np.ndarray[Any, Any]]:
    """The family's default (non-smoke) configuration fitted on the dataset's training
    split, and its held-out rows."""
    data: Dataset = load_dataset(dataset)
    x_train, x_test, y_train, _ = train_test_split(
        data.features, data.labels, test_size=0.2, stratify=data.labels, random_state=42
    )
    (candidate,) = build_candidates((family,), smoke=False, seed=42)
    estimator = candidate.estimator
    # The grid's first point: the default search's forest and boosting sizes.
    estimator.set_params(**{k: v[0] for k, v in candidate.param_grid.items()})
    return estimator.fit(x_train, y_train), x_test


@pytest.fixture(scope="module")
def csv_dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_csv(tmp_path_factory.mktemp("csv") / "three_classes.csv"))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dataset", ["breast_cancer", "iris", "csv"])
def test_every_family_passes_parity_on_every_dataset(
    family: str, dataset: str, csv_dataset: str
) -> None:
    estimator, x_test = fitted(csv_dataset if dataset == "csv" else dataset, family)
    result = export(estimator, x_test)
    assert result.parity is not None
    assert result.parity.labels_equal, result.record.reason
    assert result.parity.max_abs_probability_diff <= 1e-6, result.record.reason
    assert result.record.parity == PASSED
    assert result.record.serving_runtime == ONNX
    assert result.record.file == ONNX_FILE
    assert result.model is not None
    assert result.record.sha256 == sha256_of(result.model)
    assert result.record.rows == len(x_test)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_graph_takes_and_gives_doubles(family: str) -> None:
    estimator, x_test = fitted("iris", family)
    runner = OnnxClassifier(convert(estimator))
    assert (runner.n_features, runner.n_classes) == (4, 3)
    probabilities = runner.predict_proba(x_test)
    assert probabilities.dtype == np.float64
    assert probabilities.shape == (len(x_test), 3)
    np.testing.assert_allclose(probabilities, estimator.predict_proba(x_test), rtol=0, atol=1e-6)


def test_an_onnx_file_of_another_model_fails_the_parity_gate() -> None:
    forest, x_test = fitted("breast_cancer", "random_forest")
    logreg, _ = fitted("breast_cancer", "logreg")
    wrong = convert(logreg)  # a valid file with the right interface, of another model
    parity = check_parity(wrong, forest, x_test)
    assert not parity.passed
    assert parity.max_abs_probability_diff > 1e-6
    result = export(forest, x_test, model=wrong)
    assert (result.record.parity, result.record.serving_runtime) == (FAILED, SKLEARN)
    assert (result.record.file, result.record.sha256) == (None, None)
    assert "ONNX parity FAILED" in result.record.reason


def test_a_tighter_tolerance_than_the_model_reaches_fails_parity() -> None:
    forest, x_test = fitted("breast_cancer", "random_forest")
    result = export(forest, x_test, tolerance=0.0)
    assert result.parity is not None and result.parity.max_abs_probability_diff > 0
    assert result.record.serving_runtime == SKLEARN
    assert "bound 0" in result.record.reason


def test_a_model_skl2onnx_cannot_convert_is_served_with_scikit_learn() -> None:
    logreg, x_test = fitted("iris", "logreg")
    data = load_dataset("iris")
    # A Python function inside the pipeline: nothing ONNX can express.
    custom = make_pipeline(FunctionTransformer(np.log1p), logreg.steps[-1][1])
    custom.fit(data.features, data.labels)
    result = export(custom, x_test)
    assert result.model is None
    assert (result.record.parity, result.record.serving_runtime) == (NOT_CONVERTED, SKLEARN)
    assert "skl2onnx cannot convert Pipeline" in result.record.reason


def test_the_record_round_trips_through_model_metadata() -> None:
    estimator, x_test = fitted("iris", "hist_gradient_boosting")
    record = export(estimator, x_test).record
    assert OnnxRecord.from_metadata({"onnx": record.as_metadata()}) == record
    assert OnnxRecord.from_metadata({}) is None
    assert OnnxRecord.from_metadata({"onnx": "passed"}) is None


def quietly(function: Any, *args: Any, **kwargs: Any) -> Any:
    """skl2onnx warns about scikit-learn versions newer than those it lists."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


def test_stale_check_skl2onnx_double_input_still_misplaces_tree_thresholds() -> None:
    """Why trees are converted for float input (training/onnx_export.py). When this
    fails, skl2onnx converts trees for double input faithfully: drop the float path."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType

    forest, _ = fitted("breast_cancer", "random_forest")
    data = load_dataset("breast_cancer")
    graph = quietly(
        to_onnx,
        forest,
        initial_types=[("features", DoubleTensorType([None, 30]))],
        target_opset={"": 18, "ai.onnx.ml": 3},
        options={"zipmap": False},
    )
    import onnxruntime as ort

    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(["probabilities"], {"features": data.features})
    assert np.max(np.abs(probabilities - forest.predict_proba(data.features))) > 1e-3


def test_stale_check_onnx_runtime_sums_a_float_ensemble_in_float() -> None:
    """Why a double `Cast` goes in front of each tree ensemble. When this fails, ONNX
    Runtime sums float ensembles more precisely and the cast may go."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    forest, _ = fitted("breast_cancer", "random_forest")
    graph = quietly(
        to_onnx,
        forest,
        initial_types=[("features", FloatTensorType([None, 30]))],
        target_opset={"": 18, "ai.onnx.ml": 3},
        options={"zipmap": False},
    )
    import onnxruntime as ort

    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = load_dataset("breast_cancer").features
    (float_sum,) = session.run(["probabilities"], {"features": rows.astype(np.float32)})
    double_sum = OnnxClassifier(convert(forest)).predict_proba(rows)
    expected = forest.predict_proba(rows)
    assert np.max(np.abs(float_sum - expected)) > 3 * np.max(np.abs(double_sum - expected))
