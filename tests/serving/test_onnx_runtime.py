"""The predictor's runtime choice on model folders saved as training saves them: ONNX
Runtime for a copy that passed parity and arrives intact, scikit-learn otherwise (with
the reason logged), and `MODEL_RUNTIME` forcing either."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from contract.onnx_format import ONNX_FILE, OnnxRecord, sha256_of
from serving.errors import InvalidModel
from serving.loader import load_model_dir
from tests.serving.conftest import Data, save_mlflow_model
from training.onnx_export import export

URI = "models:/bc/4"


@pytest.fixture(scope="module")
def forest(serving_data: Data) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=30, random_state=0, n_jobs=1).fit(
        serving_data.x, serving_data.y
    )


@pytest.fixture(scope="module")
def with_onnx(forest: Any, serving_data: Data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A forest saved with its ONNX copy and record, as `training.pipeline._log_model` does."""
    folder = save_mlflow_model(forest, tmp_path_factory.mktemp("onnx") / "model", serving_data)
    copy = export(forest, serving_data.x[::5])
    assert copy.servable and copy.model is not None, copy.record.reason
    (folder / ONNX_FILE).parent.mkdir()
    (folder / ONNX_FILE).write_bytes(copy.model)
    set_record(folder, copy.record.as_metadata())
    return folder


def set_record(folder: Path, record: dict[str, Any]) -> None:
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["metadata"]["onnx"] = record
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))


def record_of(folder: Path) -> dict[str, Any]:
    return dict(yaml.safe_load((folder / "MLmodel").read_text())["metadata"]["onnx"])


@pytest.fixture
def folder(with_onnx: Path, tmp_path: Path) -> Path:
    """A copy of the folder each test may break."""
    return Path(shutil.copytree(with_onnx, tmp_path / "model"))


def fallback_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == level and "serving with scikit-learn, not ONNX Runtime" in r.getMessage()
    ]


def test_auto_serves_the_onnx_copy_without_reading_the_skops_file(
    folder: Path, forest: Any, serving_data: Data
) -> None:
    # The skops file is garbage: with ONNX Runtime it is never deserialized.
    (folder / "model.skops").write_bytes(b"not a model")
    loaded = load_model_dir(folder, "4", "r", URI)
    assert (loaded.runtime, loaded.estimator) == ("onnx", None)
    assert loaded.runtime_reason.startswith("its ONNX copy passed training's parity gate")
    assert loaded.spec.n_features == 30
    assert loaded.spec.class_names == ("malignant", "benign")

    prediction = loaded.predict(serving_data.x)
    expected = forest.predict_proba(serving_data.x)
    assert prediction.probabilities.dtype == np.float64
    np.testing.assert_allclose(prediction.probabilities, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(prediction.labels, expected.argmax(axis=1))


def test_onnx_answers_the_same_from_many_threads(folder: Path, serving_data: Data) -> None:
    loaded = load_model_dir(folder, "4", "r", URI)
    expected = loaded.predict(serving_data.x).probabilities
    answers: list[tuple[int, Any]] = []

    def predict() -> None:
        for start in range(0, 200, 7):
            answers.append((start, loaded.predict(serving_data.x[start : start + 7])))

    threads = [threading.Thread(target=predict) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == 4 * len(range(0, 200, 7))
    for start, prediction in answers:
        np.testing.assert_array_equal(prediction.probabilities, expected[start : start + 7])


def test_sklearn_forced_serves_the_estimator(folder: Path, forest: Any, serving_data: Data) -> None:
    loaded = load_model_dir(folder, "4", "r", URI, runtime="sklearn")
    assert loaded.runtime == "sklearn"
    assert loaded.runtime_reason == "MODEL_RUNTIME=sklearn forces it"
    np.testing.assert_array_equal(
        loaded.predict(serving_data.x[:9]).probabilities, forest.predict_proba(serving_data.x[:9])
    )


def test_a_missing_onnx_file_falls_back_with_a_warning(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (folder / ONNX_FILE).unlink()
    with caplog.at_level(logging.INFO, logger="serving.loader"):
        loaded = load_model_dir(folder, "4", "r", URI)
    assert loaded.runtime == "sklearn"
    (line,) = fallback_lines(caplog, logging.WARNING)
    assert line.startswith(f"{URI}: serving with scikit-learn, not ONNX Runtime: its ONNX file")
    assert "is missing or unreadable" in line
    assert loaded.runtime_reason in line


def test_a_corrupt_onnx_file_falls_back_with_a_warning(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = bytearray((folder / ONNX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / ONNX_FILE).write_bytes(bytes(data))
    with caplog.at_level(logging.INFO, logger="serving.loader"):
        loaded = load_model_dir(folder, "4", "r", URI)
    assert loaded.runtime == "sklearn"
    (line,) = fallback_lines(caplog, logging.WARNING)
    assert "its ONNX file is corrupt: SHA-256" in line
    assert record_of(folder)["sha256"][:12] in line


def test_an_onnx_file_onnx_runtime_cannot_load_falls_back(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    garbage = b"\x08\x07not an onnx graph" * 10
    (folder / ONNX_FILE).write_bytes(garbage)
    set_record(folder, {**record_of(folder), "sha256": sha256_of(garbage)})
    with caplog.at_level(logging.INFO, logger="serving.loader"):
        loaded = load_model_dir(folder, "4", "r", URI)
    assert loaded.runtime == "sklearn"
    (line,) = fallback_lines(caplog, logging.WARNING)
    assert "ONNX Runtime cannot load its ONNX file" in line


def test_a_record_naming_another_path_is_not_followed(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    set_record(folder, {**record_of(folder), "file": "../../../etc/passwd"})
    with caplog.at_level(logging.INFO, logger="serving.loader"):
        loaded = load_model_dir(folder, "4", "r", URI)
    assert loaded.runtime == "sklearn"
    (line,) = fallback_lines(caplog, logging.WARNING)
    assert "'../../../etc/passwd'" in line


def test_a_copy_that_failed_parity_is_not_served_and_that_is_no_fault(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failed = OnnxRecord(
        parity="failed",
        serving_runtime="sklearn",
        reason="ONNX parity FAILED on 114 held-out rows: ...",
        tolerance=1e-6,
    )
    set_record(folder, failed.as_metadata())
    with caplog.at_level(logging.INFO, logger="serving.loader"):
        loaded = load_model_dir(folder, "4", "r", URI)
    assert loaded.runtime == "sklearn"
    assert fallback_lines(caplog, logging.WARNING) == []
    (line,) = fallback_lines(caplog, logging.INFO)
    assert "its ONNX copy is not to be served (failed: ONNX parity FAILED" in line


def test_onnx_forced_refuses_a_version_without_a_usable_copy(
    serving_saved_models: dict[str, Path],
) -> None:
    with pytest.raises(InvalidModel, match="MODEL_RUNTIME=onnx, but models:/bc/4 cannot be"):
        load_model_dir(serving_saved_models["forest"], "4", "r", URI, runtime="onnx")


def test_the_record_is_plain_json(with_onnx: Path) -> None:
    # MLflow writes the metadata as YAML; the record holds nothing YAML-only.
    assert json.loads(json.dumps(record_of(with_onnx)))["file"] == ONNX_FILE
