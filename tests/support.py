"""Helpers the test tiers share: free ports, readiness waits, real server processes.

The servers themselves are started by demo/services.py, which the benchmarks use too;
this module adds what belongs to pytest: skipping (or, under CI, failing) when an
outside binary is missing. Tests that need a real server start it in a fixture and stop
it in the fixture's teardown; nothing waits with a bare sleep.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from demo import services
from demo.services import (
    BIN_DIR,
    PYTHON,
    REPO_ROOT,
    MlflowServer,
    Process,
    free_port,
    http_ok,
    last_json,
    mlflow_server_args,
    running_mlflow,
    start_process,
    wait_http_ok,
    wait_until,
)

__all__ = [
    "BIN_DIR",
    "PYTHON",
    "REPO_ROOT",
    "MlflowServer",
    "Process",
    "RunningSink",
    "free_port",
    "http_ok",
    "last_json",
    "mlflow_server_args",
    "require_binary",
    "running_mlflow",
    "running_postgresql",
    "running_prometheus",
    "serving_http",
    "start_process",
    "train_version",
    "under_ci",
    "wait_http_ok",
    "wait_until",
]


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_binary(name: str, *extra_dirs: str) -> str:
    """Path of an outside binary; skip when missing on a user's machine, fail under CI."""
    path = shutil.which(name)
    for folder in extra_dirs:
        if path is None and (Path(folder) / name).exists():
            path = str(Path(folder) / name)
    if path is None:
        reason = f"'{name}' is not installed (Debian: see .ci/run for the package)"
        if under_ci():
            pytest.fail(f"{reason}; CI must install it", pytrace=False)
        pytest.skip(reason)
    return path


@contextmanager
def running_prometheus(folder: Path, config: dict[str, Any]) -> Iterator[str]:
    """A real `prometheus` (skipped, or failed under CI, when it is not installed)."""
    with services.running_prometheus(require_binary("prometheus"), folder, config) as url:
        yield url


@dataclass(frozen=True)
class RunningSink:
    """The prediction-log sink of a test session (tests/conftest.py `sink`)."""

    url: str
    database_url: str
    log: Path


@contextmanager
def running_postgresql(user: str = "mlops", database: str = "mlops") -> Iterator[str]:
    """A throwaway PostgreSQL (skipped, or failed under CI, without initdb and pg_ctl)."""
    extra = services.POSTGRES_BIN_DIRS
    require_binary("initdb", *extra)
    require_binary("pg_ctl", *extra)
    with services.running_postgresql(user, database) as url:
        yield url


@contextmanager
def serving_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served on a free loopback port in a thread; its URL while the block runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def train_version(tracking_uri: str, name: str, log: Path, *args: str) -> str:
    """`python -m training --smoke` registers one version of `name`; its number. The
    first version of a name also becomes @champion (the training's own rule)."""
    import subprocess

    result = subprocess.run(
        [
            PYTHON, "-m", "training", "--tracking-uri", tracking_uri, "--model-name", name,
            "--experiment", f"{name}-{log.stem}", "--smoke", *args,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise AssertionError(f"training {name} {args} failed ({log}):\n{result.stderr[-3000:]}")
    return str(last_json(result.stdout)["version"])
