"""`make demo` end to end on a fresh copy of the tree (what a clone holds, nothing else):
the whole story runs (the rollout controller promotes a good version and rolls a bad one
back, on its own), a second `make demo` reuses every process and skips the trainings and
rollouts, and `make demo-down` leaves no process of any recorded session behind (the
local serving's predictor processes included: they live in its session)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from demo.processes import Record, session_pids
from demo.services import POSTGRES_BIN_DIRS
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


def registry_get(mlflow: str, what: str, **params: str) -> dict[str, Any]:
    answer: dict[str, Any] = requests.get(
        f"{mlflow}/api/2.0/mlflow/{what}", params=params, timeout=10
    ).json()
    return answer


def assert_the_rollouts(out: str, state: Path, mlflow: str) -> None:
    # The controller promoted the good challenger and rolled the bad one back, on its own,
    # and the demo showed the verdict tables and the decisions as they happened.
    assert "version 2: PROMOTED by the rollout controller" in out
    assert "version 3: ROLLED BACK by the rollout controller" in out
    assert re.search(r"\| verdict: PASS", out) and re.search(r"\| verdict: FAIL .*class_drift", out)
    assert "event RolloutPromoted" in out and "event RolloutRolledBack" in out
    model = registry_get(mlflow, "registered-models/get", name="breast-cancer")
    aliases = model["registered_model"]["aliases"]
    assert {a["alias"]: a["version"] for a in aliases}["champion"] == "2"
    tags = {}
    for version in ("2", "3"):
        got = registry_get(mlflow, "model-versions/get", name="breast-cancer", version=version)
        found = got["model_version"]["tags"]
        tags[version] = {t["key"]: t["value"] for t in found}
    assert tags["2"]["rollout_status"] == "promoted"
    assert tags["3"]["rollout_status"] == "rejected" and tags["3"]["gate_status"] == "passed"
    # Locust sent traffic to the one URL during each rollout and saw the split.
    good = json.loads((state / "loadtest" / "good" / "summary.json").read_text())
    assert {"1", "2"} <= set(good["versions"]), good["versions"]
    stats = (state / "loadtest" / "good" / "locust_stats.csv").read_text()
    assert "infer 1 row @v1" in stats and "infer 1 row @v2" in stats
    # The InferenceService ends on version 2, all its traffic on one revision.
    isvc = json.loads((state / "cluster" / "inferenceservices" / "breast-cancer.json").read_text())
    traffic = isvc["status"]["components"]["predictor"]["traffic"]
    assert [t["percent"] for t in traffic if t["percent"]] == [100], traffic


@pytest.mark.timeout(1800)
def test_make_demo_twice_then_demo_down_leaves_no_process(clone: Path) -> None:
    require_binary("prometheus")
    require_binary("make")
    require_binary("initdb", *POSTGRES_BIN_DIRS)  # the demo's prediction log
    state = clone / ".demo"
    ports = {
        name: str(free_port())
        for name in (
            "MLFLOW_PORT",
            "PREDICTOR_PORT",
            "PREDICTOR_GRPC_PORT",
            "CANARY_PORT",
            "CANARY_GRPC_PORT",
            "SLOT_B_PORT",
            "SLOT_B_GRPC_PORT",
            "CONTROLLER_PORT",
            "PROMETHEUS_PORT",
            "POSTGRES_PORT",
            "PREDICTIONLOG_PORT",
        )
    }
    settings = [f"{k}={v}" for k, v in ports.items()]
    mlflow = f"http://127.0.0.1:{ports['MLFLOW_PORT']}"

    first = make(clone, "demo", *settings, "DEMO_LOAD_SECONDS=5", "DEMO_CANARY_SECONDS=10")

    out = first.stdout
    assert first.returncode == 0, out[-8000:] + first.stderr[-3000:]
    # The V2 answer to the one request it shows, through the InferenceService's URL.
    assert '"model_version": "1"' in out and '"malignant"' in out
    stable = json.loads((state / "loadtest" / "stable" / "summary.json").read_text())
    assert stable["failures"] == 0 and list(stable["versions"]) == ["1"]
    assert_the_rollouts(out, state, mlflow)
    # It ends with where everything is and how to stop it.
    assert f"MLflow UI          {mlflow}" in out
    assert out.rstrip().splitlines()[-1].startswith("Stop: make demo-down")
    started = records(state)
    assert set(started) == {
        "mlflow",
        "local-serving",
        "prometheus",
        "rollout-controller",
        "postgres",
        "predictionlog",
    }
    # The predictors posted their exchanges to the prediction log, as KServe's agent would.
    logged = requests.get(
        f"http://127.0.0.1:{ports['PREDICTIONLOG_PORT']}/predictions",
        params={"limit": "1000"},
        timeout=10,
    ).json()["predictions"]
    assert {p["model_version"] for p in logged} >= {"1"}
    assert all(p["request"] and p["response"] for p in logged)
    assert all(session_pids(r) for r in started.values())
    # The demo's Prometheus runs the chart's rules, and they see the versions served.
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
    assert {"1", "2"} <= {r["metric"]["model_version"] for r in recorded}

    second = make(clone, "demo", *settings, "DEMO_LOAD_SECONDS=3", "DEMO_CANARY_SECONDS=10")

    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-3000:]
    assert "already registered: version 2 is @champion (no training)" in second.stdout
    assert "already done: version 2 was promoted (no training)" in second.stdout
    assert "already done: version 3 was rolled back (no training)" in second.stdout
    for name, record in started.items():
        assert f"reusing pid {record.pid}" in second.stdout, name
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
