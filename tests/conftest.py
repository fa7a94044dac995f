from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import MlflowServer, running_mlflow


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real `mlflow server` (SQLite, proxied artifacts) shared by a whole session.

    Tests that need a registry of their own use a distinct model name, or the
    function-scoped `fresh_mlflow_server`.
    """
    with running_mlflow(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture
def fresh_mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A real `mlflow server` of this test's own, torn down after it."""
    with running_mlflow(tmp_path / "mlflow") as server:
        yield server
