"""Fixtures of the rollout tests: a real MLflow registry with versions, the fake API server,
a kubeconfig pointing at it, and a way to run the CLI in-process."""

from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.rollout.fake_apiserver import (
    FakeApiServer,
    inference_service,
    kubeconfig_yaml,
)
from tests.rollout.helpers import (
    NAMESPACE,
    TOKEN,
    RegistryModel,
    isvc_path,
    register_versions,
)
from tests.support import MlflowServer

_model_numbers = itertools.count(1)


@pytest.fixture(autouse=True)
def _restore_signal_handlers() -> Iterator[None]:
    """The CLI's main() installs a SIGTERM handler; give the test process its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture
def registry_model(mlflow_server: MlflowServer) -> RegistryModel:
    return register_versions(mlflow_server, f"rollout-model-{next(_model_numbers)}")


@pytest.fixture
def fake_api() -> Iterator[FakeApiServer]:
    with FakeApiServer().running() as server:
        server.revisions = "ready"  # KServe's status follows each new predictor template
        yield server


@pytest.fixture
def kubeconfig(tmp_path: Path, fake_api: FakeApiServer) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(kubeconfig_yaml(fake_api.url, NAMESPACE, TOKEN))
    return path


@pytest.fixture
def make_isvc(fake_api: FakeApiServer, registry_model: RegistryModel) -> Any:
    """Put an InferenceService for the registry model into the fake API server."""

    def make(model_uri_version: str = "1", canary_percent: int | None = None) -> str:
        name = registry_model.name
        latest = "00002" if model_uri_version != "1" else None
        fake_api.put(
            isvc_path(name),
            inference_service(
                name,
                NAMESPACE,
                f"models:/{name}/{model_uri_version}",
                canary_percent,
                latest_revision=latest,
            ),
        )
        return isvc_path(name)

    return make
