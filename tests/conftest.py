from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    MlflowServer,
    RunningSink,
    free_port,
    running_mlflow,
    running_postgresql,
    start_process,
    wait_http_ok,
)


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


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """One throwaway PostgreSQL for the session (initdb + pg_ctl)."""
    with running_postgresql() as url:
        yield url


@pytest.fixture(scope="session")
def sink(postgresql_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSink]:
    """One real prediction-log sink (`python -m predictionlog`) on that PostgreSQL."""
    port = free_port()
    log = tmp_path_factory.mktemp("sink") / "sink.log"
    process = start_process(
        [sys.executable, "-m", "predictionlog", "--host", "127.0.0.1", "--http-port", str(port)],
        log,
        env={"DATABASE_URL": postgresql_url, "RETENTION_DAYS": "0"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(process, f"{url}/readyz", 60, "the prediction-log sink")
        yield RunningSink(url, postgresql_url, log)
    finally:
        process.stop()
