"""One real PostgreSQL and one real sink (`python -m predictionlog`) for the whole session;
each test writes ids and model versions of its own, so they share both."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import free_port, running_postgresql, start_process, wait_http_ok

SCHEMA = "predictionlog"


@dataclass(frozen=True)
class RunningSink:
    url: str
    database_url: str
    log: Path


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    with running_postgresql() as url:
        yield url


@pytest.fixture(scope="session")
def sink(postgresql_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSink]:
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
