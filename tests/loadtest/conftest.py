"""Real predictors for the locust runs: a version registered by the training package, a
second version of the same model (so a split has two versions to show), and a predictor
that answers nothing but errors (its alias does not exist: alive, never ready, 503)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loadtest.helpers import Predictor, Registered, start_predictor, wait_ready
from tests.support import PYTHON, REPO_ROOT, MlflowServer, last_json


@pytest.fixture(scope="module")
def registered(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Registered:
    """Version 1 from `python -m training --smoke`; version 2 registered from the same
    model, as a second training would, but in a second instead of half a minute."""
    from mlflow import MlflowClient

    name = f"bc-loadtest-{uuid.uuid4().hex[:8]}"
    command = [PYTHON, "-m", "training", "--tracking-uri", mlflow_server.url]
    command += ["--model-name", name, "--smoke", "--candidates", "logreg"]
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    (tmp_path_factory.mktemp("train") / "train.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, f"training failed:\n{result.stdout}\n{result.stderr}"
    first = last_json(result.stdout)["version"]
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    second = client.copy_model_version(f"models:/{name}/{first}", name).version
    return Registered(mlflow_server.url, name, (str(first), str(second)))


@pytest.fixture(scope="module")
def predictors(
    registered: Registered, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Predictor, Predictor]]:
    """Stable (version 1) and canary (version 2), each a `python -m serving` process."""
    logs = tmp_path_factory.mktemp("predictors")
    stable = start_predictor(
        f"models:/{registered.name}/{registered.versions[0]}",
        registered.tracking_uri,
        logs / "stable.log",
    )
    canary = start_predictor(
        f"models:/{registered.name}/{registered.versions[1]}",
        registered.tracking_uri,
        logs / "canary.log",
    )
    try:
        wait_ready(stable)
        wait_ready(canary)
        yield stable, canary
    finally:
        stable.process.stop()
        canary.process.stop()


@pytest.fixture
def failing_predictor(registered: Registered, tmp_path: Path) -> Iterator[Predictor]:
    """A real predictor whose alias does not exist: live, never ready, every infer a 503."""
    predictor = start_predictor(
        f"models:/{registered.name}@missing", registered.tracking_uri, tmp_path / "p.log"
    )
    try:
        wait_ready(predictor, "/v2/health/live")
        yield predictor
    finally:
        predictor.process.stop()
