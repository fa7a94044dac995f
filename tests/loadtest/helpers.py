"""What the locust tests share: real predictor processes and a bounded headless run."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import PYTHON, REPO_ROOT, Process, free_port, start_process, wait_http_ok

SERVED_NAME = "breast-cancer"
LOCUSTFILE = REPO_ROOT / "loadtest" / "locustfile.py"


@dataclass(frozen=True)
class Registered:
    tracking_uri: str
    name: str
    versions: tuple[str, str]


@dataclass
class Predictor:
    process: Process
    url: str


@dataclass(frozen=True)
class LocustRun:
    returncode: int
    stdout: str
    stderr: str
    summary: dict[str, Any]
    out: Path


def start_predictor(model_uri: str, tracking_uri: str, log: Path) -> Predictor:
    http_port = free_port()
    command = [PYTHON, "-m", "serving", "--model_uri", model_uri]
    command += ["--http_port", str(http_port), "--grpc_port", str(free_port())]
    process = start_process(
        command,
        log,
        env={
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MODEL_NAME": SERVED_NAME,
            "LOAD_RETRY_MAX_SECONDS": "1",
        },
    )
    return Predictor(process, f"http://127.0.0.1:{http_port}")


def wait_ready(predictor: Predictor, path: str = "/v2/health/ready") -> None:
    wait_http_ok(predictor.process, predictor.url + path, 180, f"{predictor.url}{path}")


def run_locust(
    host: str, out: Path, *extra: str, seconds: int = 4, max_requests: int = 3000
) -> LocustRun:
    """A headless run bounded in time (-t) and in count (--max-requests)."""
    out.mkdir(parents=True, exist_ok=True)
    command = [PYTHON, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"]
    command += ["-u", "4", "-r", "4", "-t", f"{seconds}s", "--max-requests", str(max_requests)]
    command += ["--host", host, "--model-name", SERVED_NAME]
    command += ["--csv", str(out / "locust"), "--html", str(out / "report.html")]
    command += ["--summary-json", str(out / "summary.json"), *extra]
    result = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
    )
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return LocustRun(result.returncode, result.stdout, result.stderr, summary, out)
