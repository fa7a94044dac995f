"""`make demo` end to end on a fresh copy of the tree (what a clone holds, nothing else):
the whole story runs, a second `make demo` reuses every process and skips the training,
and `make demo-down` leaves no process of any recorded session behind."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from demo.processes import Record, session_pids
from tests.support import REPO_ROOT, free_port, require_binary

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc").is_dir(), reason="checks sessions in /proc"),
]

VENV = Path(sys.executable).parent.parent


def copy_of_the_tree(target: Path) -> Path:
    """The files a clone would have: tracked and untracked-but-not-ignored (no .venv,
    no .demo, no caches), with their modification times."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (raw.decode() for raw in listed)):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def make(clone: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    # The tests' own environment serves (VENV=...); `-o` keeps make from reinstalling it.
    return subprocess.run(
        [
            "make",
            "-o",
            f"{VENV}/.installed",
            "-o",
            f"{VENV}/.installed-demo",
            f"VENV={VENV}",
            *args,
        ],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def records(state: Path) -> dict[str, Record]:
    return {
        path.stem: Record(**json.loads(path.read_text()))
        for path in sorted((state / "run").glob("*.json"))
    }


@pytest.fixture
def clone(tmp_path: Path) -> Iterator[Path]:
    clone = copy_of_the_tree(tmp_path / "clone")
    yield clone
    # Whatever happened above, stop what the demo started (by its PID records).
    subprocess.run(
        [sys.executable, "-m", "demo", "down", "--dir", str(clone / ".demo")],
        cwd=clone,
        capture_output=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(1800)
def test_make_demo_twice_then_demo_down_leaves_no_process(clone: Path) -> None:
    require_binary("prometheus")
    require_binary("make")
    state = clone / ".demo"
    ports = {
        name: str(free_port())
        for name in (
            "MLFLOW_PORT",
            "PREDICTOR_PORT",
            "PREDICTOR_GRPC_PORT",
            "CANARY_PORT",
            "CANARY_GRPC_PORT",
            "PROMETHEUS_PORT",
        )
    }
    settings = [f"{k}={v}" for k, v in ports.items()]

    first = make(clone, "demo", *settings, "DEMO_LOAD_SECONDS=5", "DEMO_CANARY_SECONDS=15")

    out = first.stdout
    assert first.returncode == 0, out[-6000:] + first.stderr[-3000:]
    # The V2 answer to the one request it shows.
    assert '"model_version": "1"' in out and '"malignant"' in out
    # The load tests' summaries, and the split the canary run observed.
    assert out.count("SLO verdict:") == 2
    stable = json.loads((state / "loadtest" / "stable" / "summary.json").read_text())
    canary = json.loads((state / "loadtest" / "canary" / "summary.json").read_text())
    assert stable["failures"] == 0 and list(stable["versions"]) == ["1"]
    assert canary["failures"] == 0 and set(canary["versions"]) == {"1", "2"}
    assert 0.03 <= canary["version_share"]["2"] <= 0.25, canary["versions"]
    assert (state / "loadtest" / "canary" / "report.html").exists()
    # The rollout analysis ran against the local Prometheus and gave a verdict.
    assert re.search(r"^canary verdict: (PASS|FAIL|INCONCLUSIVE) \(exit [013]\)", out, re.M)
    assert "canary analysis of breast-cancer: stable v1 vs canary v2" in out
    # It ends with where everything is and how to stop it.
    assert f"MLflow UI          http://127.0.0.1:{ports['MLFLOW_PORT']}" in out
    assert out.rstrip().splitlines()[-1].startswith("Stop: make demo-down")
    started = records(state)
    assert set(started) == {"mlflow", "predictor", "canary", "prometheus"}
    assert all(session_pids(r) for r in started.values())
    # The demo's Prometheus runs the chart's rules, and they see both versions.
    prometheus = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"
    groups = requests.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    alerts = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
    assert {"InferenceCanaryLatencyWorse", "InferenceErrorRatioHigh"} <= alerts
    # (`none`, the series of requests before a model loaded, stays at rate 0)
    ok = 'model_version:inference_requests:rate5m{outcome="ok"}'
    by_version = f"sum by (model_version) ({ok}) > 0"
    recorded = requests.get(
        f"{prometheus}/api/v1/query", params={"query": by_version}, timeout=10
    ).json()["data"]["result"]
    assert {r["metric"]["model_version"] for r in recorded} == {"1", "2"}
    # The locust report of the canary run has a row per answering version.
    stats = (state / "loadtest" / "canary" / "locust_stats.csv").read_text()
    assert "infer 1 row @v1" in stats and "infer 1 row @v2" in stats

    second = make(clone, "demo", *settings, "DEMO_LOAD_SECONDS=3", "DEMO_CANARY_SECONDS=6")

    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-3000:]
    for name, record in started.items():
        assert f"reusing pid {record.pid}" in second.stdout, name
    assert "already registered: version 1 is @champion (no training)" in second.stdout
    assert "already registered: version 2 is @challenger (no training)" in second.stdout
    assert records(state) == started

    down = make(clone, "demo-down", timeout=180)

    assert down.returncode == 0, down.stdout + down.stderr
    for name, record in started.items():
        assert f"{name} (pid {record.pid}): stopped" in down.stdout
        assert session_pids(record) == [], f"{name} left processes behind"
    assert records(state) == {}
    assert (state / "mlflow" / "mlflow.db").exists(), "demo-down keeps the data"

    clean = make(clone, "demo-down", "CLEAN=1", timeout=180)

    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert not state.exists()
