"""The training Job against a real `mlflow server`: registration, gates, outages."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tests.support import PYTHON, REPO_ROOT, MlflowServer, free_port, running_mlflow

pytestmark = pytest.mark.integration

MODEL = "breast-cancer"


@dataclass
class JobResult:
    exit_code: int
    summary: dict[str, Any]
    output: str
    seconds: float


def run_job(tracking_uri: str, *args: str, timeout: float = 300) -> JobResult:
    started = time.monotonic()
    done = subprocess.run(
        [PYTHON, "-m", "training", "--tracking-uri", tracking_uri, "--smoke", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{done.stderr}"
    return JobResult(
        done.returncode,
        json.loads(lines[-1]),
        done.stdout + done.stderr,
        time.monotonic() - started,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    with running_mlflow(tmp_path_factory.mktemp("training-mlflow")) as running:
        yield running


@pytest.fixture(scope="module")
def first_run(server: MlflowServer) -> JobResult:
    return run_job(server.url, "--model-name", MODEL)


def aliases(client: MlflowClient) -> dict[str, str]:
    return {
        str(alias): str(version)
        for alias, version in client.get_registered_model(MODEL).aliases.items()
    }


def test_first_run_registers_a_version_with_both_aliases(
    server: MlflowServer, first_run: JobResult
) -> None:
    assert first_run.exit_code == 0, first_run.output
    summary = first_run.summary
    assert (summary["status"], summary["version"], summary["model_uri"]) == (
        "registered",
        "1",
        f"models:/{MODEL}/1",
    )
    assert sorted(summary["aliases_set"]) == ["challenger", "champion"]
    assert [gate["passed"] for gate in summary["gates"]] == [True, True, True]
    client = MlflowClient(server.url)
    assert aliases(client) == {"champion": "1", "challenger": "1"}
    version = client.get_model_version(MODEL, "1")
    assert version.run_id == summary["run_id"]
    assert version.tags["gate_status"] == "passed"
    assert version.tags["data_sha256"] == summary["data_sha256"]
    assert version.description.startswith("Passed every gate")


def test_first_run_logs_metrics_artifacts_and_every_candidate(
    server: MlflowServer, first_run: JobResult
) -> None:
    client = MlflowClient(server.url)
    run = client.get_run(first_run.summary["run_id"])
    expected_metrics = {
        "cv_roc_auc_mean",
        "cv_roc_auc_std",
        "cv_malignant_recall_mean",
        "cv_malignant_recall_std",
        "test_accuracy",
        "test_precision",
        "test_recall",
        "test_f1",
        "test_roc_auc",
        "test_malignant_recall",
        "predict_latency_ms",
    }
    assert expected_metrics <= set(run.data.metrics)
    assert run.data.tags["data_sha256"] == first_run.summary["data_sha256"]
    assert run.data.params["data_sha256"] == first_run.summary["data_sha256"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "confusion_matrix.png",
        "roc_curve.png",
        "classification_report.txt",
        "run_summary.json",
    } <= artifacts
    local = client.download_artifacts(run.info.run_id, "confusion_matrix.png")
    assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert {child.data.tags["family"] for child in children} == {
        "logreg",
        "random_forest",
        "hist_gradient_boosting",
    }
    for child in children:
        assert {"cv_roc_auc_mean", "predict_latency_ms"} <= set(child.data.metrics)


def test_registered_model_carries_signature_and_loads_natively(
    server: MlflowServer, first_run: JobResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.artifacts
    import numpy as np
    from mlflow.models import Model

    from contract.model_format import load_estimator
    from training.data import load_dataset

    # models:/ URIs are resolved by the registry, which follows MLFLOW_TRACKING_URI.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{MODEL}/1")
    model = Model.load(local)
    data = load_dataset("breast_cancer")
    assert model.signature is not None
    assert model.signature.inputs.input_names() == list(data.feature_names)
    assert model.metadata is not None
    # The ONNX copy's and the drift profile's records have tests of their own below.
    records = {"onnx", "drift_profile"}
    assert {k: v for k, v in model.metadata.items() if k not in records} == {
        "class_names": ["malignant", "benign"],
        "critical_class": "malignant",
    }
    assert model.saved_input_example_info is not None
    estimator = load_estimator(local)
    probabilities = estimator.predict_proba(data.features[:5])
    assert probabilities.shape == (5, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_the_version_carries_an_onnx_copy_proven_equal_on_the_test_split(
    server: MlflowServer, first_run: JobResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.artifacts
    import numpy as np
    from mlflow.models import Model

    from contract.model_format import load_estimator
    from contract.onnx_format import ONNX_FILE, OnnxClassifier, OnnxRecord, sha256_of
    from training.data import load_dataset

    assert first_run.exit_code == 0, first_run.output
    assert (first_run.summary["serving_runtime"], first_run.summary["onnx_parity"]) == (
        "onnx",
        "passed",
    )
    client = MlflowClient(server.url)
    version = client.get_model_version(MODEL, "1")
    assert (version.tags["serving_runtime"], version.tags["onnx_parity"]) == ("onnx", "passed")
    assert "ONNX parity passed on 114 held-out rows" in version.tags["onnx_parity_detail"]
    metrics = client.get_run(first_run.summary["run_id"]).data.metrics
    assert metrics["onnx_parity_rows"] == 114
    assert metrics["onnx_parity_labels_equal"] == 1.0
    assert metrics["onnx_parity_max_abs_diff"] <= 1e-6

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{MODEL}/1"))
    record = OnnxRecord.from_metadata(Model.load(str(local)).metadata)
    assert record is not None
    assert (record.parity, record.serving_runtime, record.file) == ("passed", "onnx", ONNX_FILE)
    onnx_bytes = (local / ONNX_FILE).read_bytes()
    assert record.sha256 == sha256_of(onnx_bytes)
    rows = load_dataset("breast_cancer").features
    np.testing.assert_allclose(
        OnnxClassifier(onnx_bytes).predict_proba(rows),
        load_estimator(local).predict_proba(rows),
        rtol=0,
        atol=1e-6,
    )


def test_the_version_carries_the_training_split_s_drift_profile(
    server: MlflowServer, first_run: JobResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The profile is logged inside the model (the version pins it), counted on the
    training split only: 455 of the 569 rows, as the split and its seed decide."""
    import hashlib

    import mlflow.artifacts
    import numpy as np
    from mlflow.models import Model
    from sklearn.model_selection import train_test_split

    from contract.drift_profile import PROFILE_FILE, DriftProfile, ProfileRecord, build_profile
    from training.data import load_dataset

    assert first_run.exit_code == 0, first_run.output
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{MODEL}/1"))
    model = Model.load(str(local))
    record = ProfileRecord.from_metadata(model.metadata)
    assert record is not None and record.file == PROFILE_FILE
    text = (local / PROFILE_FILE).read_bytes()
    assert record.sha256 == hashlib.sha256(text).hexdigest()
    profile = DriftProfile.from_json(text)
    assert profile.feature_names == tuple(model.signature.inputs.input_names())
    data = load_dataset("breast_cancer")
    x_train, _, _, _ = train_test_split(
        data.features, data.labels, test_size=0.2, stratify=data.labels, random_state=42
    )
    assert profile.rows == len(x_train) == 455
    assert profile == build_profile(x_train, data.feature_names)
    assert all(np.isclose(sum(f.shares), 1) for f in profile.features)


def test_a_copy_that_fails_parity_registers_served_with_scikit_learn_saying_why(
    server: MlflowServer, first_run: JobResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.artifacts
    from mlflow.models import Model

    from contract.onnx_format import ONNX_FILE, OnnxRecord

    assert first_run.exit_code == 0
    # No runtime matches float64 arithmetic to the last bit: a bound of 0 fails them all.
    result = run_job(server.url, "--model-name", "parity-fails", "--onnx-parity-tolerance", "0")
    assert result.exit_code == 0, result.output
    assert (result.summary["serving_runtime"], result.summary["onnx_parity"]) == (
        "sklearn",
        "failed",
    )
    client = MlflowClient(server.url)
    version = client.get_model_version("parity-fails", result.summary["version"])
    assert version.tags["serving_runtime"] == "sklearn"
    assert "ONNX parity FAILED" in version.tags["onnx_parity_detail"]
    assert "(bound 0)" in version.tags["onnx_parity_detail"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/parity-fails/{result.summary['version']}"
        )
    )
    record = OnnxRecord.from_metadata(Model.load(str(local)).metadata)
    assert record is not None and (record.serving_runtime, record.file) == ("sklearn", None)
    assert not (local / ONNX_FILE).exists()
    # The failed copy stays with the run, for whoever looks into it.
    artifacts = {
        a.path for a in client.list_artifacts(result.summary["run_id"], "onnx_failed_parity")
    }
    assert artifacts == {"onnx_failed_parity/model.onnx"}


def test_run_that_fails_the_gates_exits_3_and_moves_no_alias(
    server: MlflowServer, first_run: JobResult
) -> None:
    assert first_run.exit_code == 0
    failing = run_job(
        server.url,
        "--model-name",
        MODEL,
        "--min-malignant-recall",
        "1.0",
        "--max-cv-recall-std",
        "0.0",
    )
    assert failing.exit_code == 3, failing.output
    summary = failing.summary
    assert summary["status"] == "rejected"
    assert summary["aliases_set"] == []
    failed_gates = {gate["name"] for gate in summary["gates"] if not gate["passed"]}
    assert failed_gates == {"min_malignant_recall", "max_cv_malignant_recall_std"}
    assert "gates failed, no alias moved" in failing.output

    client = MlflowClient(server.url)
    assert aliases(client) == {"champion": "1", "challenger": "1"}
    rejected = client.get_model_version(MODEL, summary["version"])
    assert rejected.tags["gate_status"] == "rejected"
    assert "malignant_recall" in rejected.tags["rejection_reason"]

    # Same seed, same data, same search: the same numbers (all but measured latency).
    def scores(metrics: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in metrics.items() if k != "predict_latency_ms"}

    assert scores(summary["metrics"]) == scores(first_run.summary["metrics"])
    assert summary["params"] == first_run.summary["params"]
    assert summary["data_sha256"] == first_run.summary["data_sha256"]


def test_registry_unreachable_exits_4_within_the_deadline() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    result = run_job(nobody, "--registry-timeout", "3", timeout=60)
    assert result.exit_code == 4, result.output
    assert result.summary["status"] == "error"
    assert "did not answer within 3s" in result.summary["error"]
    assert result.seconds < 30


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["--cv-folds", "1"], "--cv-folds must be at least 2"),
        (["--dataset", "/nonexistent/data.csv"], "does not exist"),
    ],
)
def test_bad_configuration_exits_2_naming_the_problem(args: list[str], message: str) -> None:
    result = run_job(f"http://127.0.0.1:{free_port()}", *args, timeout=60)
    assert result.exit_code == 2, result.output
    assert message in result.summary["error"]


def test_iris_trains_and_gates_on_the_worst_class_recall(server: MlflowServer) -> None:
    # Three classes of 50 rows: the breast-cancer thresholds are too strict for iris. (With
    # every family as fast under ONNX Runtime, the forest's best CV score wins; it recalls
    # 8 of one class's 10 test rows.)
    result = run_job(
        server.url,
        "--model-name",
        "iris",
        "--dataset",
        "iris",
        "--min-malignant-recall",
        "0.75",
        "--max-cv-recall-std",
        "0.15",
    )
    assert result.exit_code == 0, result.output
    assert result.summary["dataset"] == "iris"
    assert "test_worst_class_recall" in result.summary["metrics"]
    assert result.summary["serving_runtime"] == "onnx", result.output
    assert result.summary["gates"][0]["name"] == "min_worst_class_recall"
    assert sorted(result.summary["aliases_set"]) == ["challenger", "champion"]
    run = MlflowClient(server.url).get_run(result.summary["run_id"])
    assert MlflowClient(server.url).get_experiment(run.info.experiment_id).name == "iris"


def test_the_run_records_its_limits_its_data_and_a_name_of_its_own(
    server: MlflowServer, first_run: JobResult
) -> None:
    client = MlflowClient(server.url)
    run = client.get_run(first_run.summary["run_id"])
    params = run.data.params
    assert (params["min_malignant_recall"], params["max_cv_recall_std"]) == ("0.95", "0.05")
    assert params["max_regression"] == "0.0"
    [dataset] = run.inputs.dataset_inputs
    assert dataset.dataset.name == "breast_cancer"
    assert [tag.value for tag in dataset.tags if tag.key == "mlflow.data.context"] == ["training"]
    name = run.info.run_name
    assert name.startswith(f"train-{MODEL}-{first_run.summary['data_sha256'][:8]}-"), name


def test_the_version_names_each_gate_s_limit_and_the_model_is_described(
    server: MlflowServer, first_run: JobResult
) -> None:
    client = MlflowClient(server.url)
    version = client.get_model_version(MODEL, first_run.summary["version"])
    assert "min_malignant_recall (limit 0.95)" in version.description
    assert "max_cv_malignant_recall_std (limit 0.05)" in version.description
    assert "no_regression_vs_champion (no limit applied): no @champion yet" in version.description
    assert "Aliases moved here: @challenger, @champion." in version.description
    assert (
        "@champion is what the stable revision serves"
        in client.get_registered_model(MODEL).description
    )
