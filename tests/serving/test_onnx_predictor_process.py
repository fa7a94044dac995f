"""A forest registered by the training package, served by real predictor processes with
ONNX Runtime and with scikit-learn: the same labels, probabilities within the parity
bound, over REST and gRPC; and the fallback when the registry hands over a corrupt copy."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contract.onnx_format import ONNX_FILE
from tests.serving.test_predictor_process import (
    SERVED_NAME,
    Predictor,
    Registered,
    infer_body,
    register_with_training,
    scrape,
    start_predictor,
)
from tests.support import MlflowServer, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def forest_version(
    mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Registered:
    return register_with_training(
        mlflow_server,
        f"bc-forest-{uuid.uuid4().hex[:8]}",
        tmp_path_factory.mktemp("train-forest") / "train.log",
        candidates="random_forest",
        # The smoke forest recalls 39 of the 42 malignant test rows.
        extra=("--min-malignant-recall", "0.9"),
    )


def ready_predictor(registered: Registered, log: Path, runtime: str) -> Predictor:
    running = start_predictor(
        f"models:/{registered.name}/{registered.version}",
        registered.server.url,
        log,
        env={"MODEL_RUNTIME": runtime, "MAX_BATCH_SIZE": "64"},
    )
    wait_until(
        lambda: running.ready() or not running.process.alive(), 120, "the predictor to be ready"
    )
    assert running.ready(), running.process.log()
    return running


@pytest.fixture(scope="module")
def predictors(
    forest_version: Registered, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Predictor]]:
    folder = tmp_path_factory.mktemp("predictors")
    started: dict[str, Predictor] = {}
    try:
        for runtime in ("auto", "sklearn"):
            started[runtime] = ready_predictor(forest_version, folder / f"{runtime}.log", runtime)
        yield started
    finally:
        for running in started.values():
            running.process.stop()


def rows() -> list[list[float]]:
    from sklearn.datasets import load_breast_cancer

    return [[float(v) for v in row] for row in load_breast_cancer().data[::9][:64]]


def rest_outputs(predictor: Predictor) -> dict[str, Any]:
    response = predictor.post(f"/v2/models/{SERVED_NAME}/infer", json=infer_body(rows()))
    assert response.status_code == 200, response.text
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


def grpc_outputs(predictor: Predictor) -> dict[str, Any]:
    from kserve import InferenceGRPCClient
    from kserve.protocol.infer_type import InferInput, InferRequest

    data = np.array(rows())

    async def call() -> Any:
        tensor = InferInput("features", list(data.shape), "FP64")
        tensor.set_data_from_numpy(data, binary_data=True)
        async with InferenceGRPCClient(predictor.grpc, timeout=30) as client:
            return await client.infer(InferRequest(SERVED_NAME, [tensor]))

    response = asyncio.run(call())
    return {o.name: o.as_numpy() for o in response.outputs}


def test_auto_serves_the_forest_with_onnx_runtime_and_says_why(
    predictors: dict[str, Predictor],
) -> None:
    onnx, sklearn = predictors["auto"], predictors["sklearn"]
    log = onnx.process.log()
    assert "with ONNX Runtime (its ONNX copy passed training's parity gate (ONNX parity passed" in (
        log
    )
    assert "with scikit-learn (MODEL_RUNTIME=sklearn forces it)" in sklearn.process.log()
    parameters = onnx.get(f"/v2/models/{SERVED_NAME}").json()["parameters"]
    assert parameters["runtime"] == "onnx"
    assert parameters["runtime_reason"].startswith("its ONNX copy passed training's parity gate")
    assert sklearn.get(f"/v2/models/{SERVED_NAME}").json()["parameters"]["runtime"] == "sklearn"
    runtimes = {
        runtime: {
            dict(labels)["runtime"]
            for (name, labels), _ in scrape(running).items()
            if name == "inference_model_info"
        }
        for runtime, running in predictors.items()
    }
    assert runtimes == {"auto": {"onnx"}, "sklearn": {"sklearn"}}


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_onnx_runtime_answers_like_scikit_learn(
    predictors: dict[str, Predictor], protocol: str
) -> None:
    call = rest_outputs if protocol == "rest" else grpc_outputs
    onnx, sklearn = call(predictors["auto"]), call(predictors["sklearn"])
    expected_rows = len(rows())
    assert np.asarray(onnx["label"]).tolist() == np.asarray(sklearn["label"]).tolist()
    assert list(onnx["class_name"]) == list(sklearn["class_name"])
    probabilities = np.asarray(onnx["probabilities"], dtype=np.float64).reshape(expected_rows, 2)
    reference = np.asarray(sklearn["probabilities"], dtype=np.float64).reshape(expected_rows, 2)
    assert np.max(np.abs(probabilities - reference)) <= 1e-6
    # Both classes appear: the comparison covers more than one answer.
    assert set(np.asarray(onnx["label"]).tolist()) == {0, 1}


def test_a_corrupt_copy_in_the_registry_is_served_with_scikit_learn_and_logged(
    forest_version: Registered, tmp_path: Path
) -> None:
    downloaded = Path(_download_version(forest_version, tmp_path / "version"))
    digest = hashlib.sha256((downloaded / ONNX_FILE).read_bytes()).hexdigest()
    (stored,) = [
        path
        for path in forest_version.server.root.rglob("model.onnx")
        if hashlib.sha256(path.read_bytes()).hexdigest() == digest
    ]
    original = stored.read_bytes()
    stored.write_bytes(original[: len(original) // 2])  # a truncated upload
    try:
        running = ready_predictor(forest_version, tmp_path / "corrupt.log", "auto")
        try:
            log = running.process.log()
            assert "serving with scikit-learn, not ONNX Runtime: its ONNX file is corrupt" in log
            assert running.get(f"/v2/models/{SERVED_NAME}").json()["parameters"]["runtime"] == (
                "sklearn"
            )
            assert rest_outputs(running)["label"] is not None
        finally:
            running.process.stop()
    finally:
        stored.write_bytes(original)


def _download_version(registered: Registered, folder: Path) -> str:
    import mlflow.artifacts
    from mlflow import MlflowClient

    client = MlflowClient(registered.server.url, registry_uri=registered.server.url)
    location = client.get_model_version_download_uri(registered.name, registered.version)
    return str(
        mlflow.artifacts.download_artifacts(
            artifact_uri=location, dst_path=str(folder), tracking_uri=registered.server.url
        )
    )
