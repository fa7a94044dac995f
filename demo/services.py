"""Real servers started from Python and stopped when done: `mlflow server` as the chart
runs it, `prometheus`, any child process with its log; free ports and readiness waits.

The tests (tests/support.py re-exports these), the benchmarks and the demo share them.
They live here, in the package that runs the project locally, rather than in the test
tree: a benchmark is not a test, and must run from an installed checkout without pytest.
Nothing here waits with a bare sleep: everything polls with a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo.processes import http_ok
from demo.settings import REPO_ROOT

PYTHON = sys.executable
BIN_DIR = Path(PYTHON).parent
"""mlflow's CLI lives beside the interpreter that runs the project."""

__all__ = [
    "BIN_DIR",
    "PYTHON",
    "REPO_ROOT",
    "MlflowServer",
    "Process",
    "free_port",
    "http_ok",
    "last_json",
    "mlflow_server_args",
    "running_mlflow",
    "running_postgresql",
    "running_prometheus",
    "start_process",
    "wait_http_ok",
    "wait_until",
]

MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
"""MLflow 3's server also starts a job runner (GenAI features) with a handful of worker
processes; nothing here uses it, and a small machine notices them."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_http_ok(process: Process, url: str, timeout: float, what: str) -> None:
    """Wait until `url` answers 200; fail at once, with the log, if `process` exits first."""
    wait_until(lambda: http_ok(url) or not process.alive(), timeout, what)
    if not process.alive():
        raise RuntimeError(f"{what}: the process exited\n{process.log()}")


@dataclass
class Process:
    """A child process with its log file, stopped by `stop()` (SIGTERM, then SIGKILL)."""

    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10) -> None:
        if self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


def start_process(
    args: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> Process:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            list(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=REPO_ROOT,
            start_new_session=True,  # own process group: stop() takes its workers too
        )
    return Process(popen, log_path)


@dataclass
class MlflowServer:
    url: str
    port: int
    process: Process
    root: Path


def mlflow_server_args(
    root: Path,
    port: int,
    backend_uri: str | None = None,
    *,
    expose_metrics: bool = False,
    bin_dir: Path = BIN_DIR,
) -> list[str]:
    """`mlflow server` as the chart runs it: proxied artifacts, SQLite unless told otherwise,
    its own Prometheus metrics at /metrics when `expose_metrics` (the chart's default)."""
    backend = backend_uri or f"sqlite:///{root / 'mlflow.db'}"
    metrics = ["--expose-prometheus", str(root / "metrics")] if expose_metrics else []
    return [
        str(bin_dir / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        backend,
        "--serve-artifacts",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
        *metrics,
    ]


@contextmanager
def running_mlflow(
    root: Path,
    port: int | None = None,
    backend_uri: str | None = None,
    timeout: float = 90,
    *,
    expose_metrics: bool = False,
) -> Iterator[MlflowServer]:
    """Start a real `mlflow server`, wait for /health, stop it on exit."""
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    env = {"PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}", **MLFLOW_SERVER_ENV}
    process = start_process(
        mlflow_server_args(root, port, backend_uri, expose_metrics=expose_metrics),
        root / "mlflow.log",
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(process, f"{url}/health", timeout, f"mlflow server on {url}")
        yield MlflowServer(url=url, port=port, process=process, root=root)
    finally:
        process.stop()


@contextmanager
def running_prometheus(binary: str, folder: Path, config: dict[str, Any]) -> Iterator[str]:
    """Start a real `prometheus` (`binary`) with `config` (its files in `folder`), wait
    until it is ready, stop it on exit; yields its URL."""
    import yaml

    config_path = folder / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    process = start_process(
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        folder / "prometheus.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(process, f"{url}/-/ready", 60, "prometheus")
        yield url
    finally:
        process.stop()


POSTGRES_BIN_DIRS = tuple(str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin")))
"""Where Debian's postgresql package keeps initdb and pg_ctl (not on PATH)."""


def postgres_binary(name: str) -> str | None:
    """`initdb`, `pg_ctl`...: on PATH, else in Debian's versioned folder (newest first)."""
    found = shutil.which(name)
    for folder in reversed(POSTGRES_BIN_DIRS):
        if found is None and (Path(folder) / name).exists():
            found = str(Path(folder) / name)
    return found


@contextmanager
def running_postgresql(user: str = "mlops", database: str = "mlops") -> Iterator[str]:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) on a free loopback port, with
    `database` owned by `user` (trust auth); yields its URL, removes it all on exit.
    `RuntimeError` when initdb is not installed."""
    initdb, pg_ctl = postgres_binary("initdb"), postgres_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError("PostgreSQL's initdb and pg_ctl are not installed")
    # PostgreSQL refuses to run as root: as root, the cluster belongs to `nobody`, in a
    # folder of its own (a test's tmp_path is not reachable for other users).
    root = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        run_as = ["runuser", "-u", "nobody", "--"]
        shutil.chown(root, "nobody")
    data, port = root / "data", free_port()
    try:
        subprocess.run(
            [*run_as, initdb, "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *run_as,
                pg_ctl,
                "-D",
                str(data),
                "-l",
                str(root / "pg.log"),
                "-w",
                "-o",
                f"-k {root} -h 127.0.0.1 -p {port}",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        # The `postgres` maintenance database exists after initdb; the project's is made here.
        url = f"postgresql://{user}@127.0.0.1:{port}"
        import psycopg

        with psycopg.connect(f"{url}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        yield f"{url}/{database}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*run_as, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
                check=False,
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)


def last_json(output: str) -> dict[str, Any]:
    """The JSON object on the last line of a command's output (what the project's
    commands print last: a summary, an answer)."""
    return dict(json.loads(output.strip().splitlines()[-1]))
