"""The analysis for real: `mlflow server`, versions trained by `python -m training`,
predictor processes (`python -m serving`) serving them, and a real `prometheus`
scraping every predictor each second. The test drives V2 traffic 90/10 and runs
`python -m rollout analyze`, i.e. the same PromQL (queries.py) that runs
against the cluster's Prometheus.

The versions:
- stable: logistic regression on the breast-cancer data;
- healthy: the same recipe with another seed;
- schema: trained on a CSV with only the first 10 features. Clients keep sending the
  30 features the stable version takes, so this canary answers every request with a
  400 (`outcome="invalid"`), the realistic fault of a model whose input schema changed.
- flipped: the e2e tier's deliberately worse model (tests/e2e/flipped.py), trained
  exactly as its Job runs on kind: the environment of the chart's rendered training Job,
  every gate on, against @champion = stable. It passes the gates and becomes
  @challenger (the e2e's premise), serves without an error, but calls most benign
  tumours malignant, so its predicted-class mix shifts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from sklearn.datasets import load_breast_cancer

from rollout import queries
from rollout.__main__ import main
from rollout.progress import ANNOTATION
from tests.e2e import flipped
from tests.support import (
    PYTHON,
    REPO_ROOT,
    MlflowServer,
    Process,
    free_port,
    last_json,
    require_binary,
    running_prometheus,
    start_process,
    wait_http_ok,
    wait_until,
)

pytestmark = pytest.mark.integration

MODEL = "rollout-analysis"
ROLES = ("stable", "healthy", "schema", "flipped")
GATES_OFF = ["--min-malignant-recall", "0", "--max-cv-recall-std", "1", "--max-regression", "1"]
BATCH = 4  # rows per request: more predicted rows for the class mix, still small requests
TRAFFIC_DEADLINE = 120.0
# Judged in the analysis: a canary needs this many requests (and predicted rows).
MIN_REQUESTS = 50
# The test machine runs other suites at the same time; a single slow request must not
# decide these tests, whose subject is the success ratio and the class mix (the p99
# rule is unit-tested in test_analysis.py).
P99_SLACK = "0.25"


def write_csv(path: Path, columns: int, flip: bool) -> Path:
    path.write_text(flipped.breast_cancer_csv(columns, flip=flip))
    return path


def train(server: MlflowServer, role: str, folder: Path) -> subprocess.Popen[str]:
    if role == "flipped":
        return train_as_the_e2e_job(server, folder)
    dataset = {
        "stable": [],
        "healthy": ["--seed", "7"],
        "schema": ["--dataset", str(write_csv(folder / "ten-features.csv", 10, flip=False))],
    }[role]
    return subprocess.Popen(
        [
            PYTHON, "-m", "training", "--tracking-uri", server.url, "--model-name", MODEL,
            "--experiment", f"rollout-{role}", "--smoke", "--candidates", "logreg",
            *GATES_OFF, *dataset,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )  # fmt: skip


def train_as_the_e2e_job(server: MlflowServer, folder: Path) -> subprocess.Popen[str]:
    """`python -m training` with the environment of the Job that `make train
    TRAIN_HELM_ARGS="-f tests/e2e/flipped-values.yaml"` renders for the e2e release (its
    gates, its candidates), only the registry, the model's name and the CSV's place
    changed: the ConfigMap's file is written where this process can read it."""
    from tests.chart.render import render

    values = flipped.flipped_values()
    values["training"]["settings"].update(flipped.E2E_TRAINING_SETTINGS)
    values["training"]["runSuffix"] = "e2e"
    job = render(values).one("Job", "-train-e2e")
    csv_file = folder / flipped.CSV_KEY
    csv_file.write_text(flipped.config_map("mlops-e2e")["data"][flipped.CSV_KEY])
    home = folder / "job-home"
    env = flipped.job_environment(
        job, MLFLOW_TRACKING_URI=server.url, MODEL_NAME=MODEL, DATASET=str(csv_file),
        HOME=str(home), MPLCONFIGDIR=str(home / "matplotlib"),
        TRAINING_JOB_UID="e2e-flipped-job", PATH=os.environ.get("PATH", ""),
    )  # fmt: skip
    assert "MIN_MALIGNANT_RECALL" in env and "DATASET" in env  # the chart's settings
    return subprocess.Popen(
        [PYTHON, "-m", "training"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )


@dataclass
class World:
    prometheus_url: str
    tracking_uri: str
    versions: dict[str, str]
    """Role -> registry version."""
    predictors: dict[str, str]
    """Role -> base URL."""
    summaries: dict[str, dict[str, Any]]
    """Role -> the training run's JSON summary."""
    sent: Counter[str] = field(default_factory=Counter)
    """Requests sent per role, over the whole module."""
    answers: dict[str, Counter[Any]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_binary("prometheus")  # before training, not after it
    folder = tmp_path_factory.mktemp("analysis")
    # Training runs in parallel (own experiments); the versions come from their summaries.
    # The flipped run comes last, with stable as @champion: its no-regression gate
    # compares with that, as on the cluster.
    from mlflow import MlflowClient

    summaries: dict[str, dict[str, Any]] = {}
    for wave in (ROLES[:-1], ROLES[-1:]):
        if "stable" in summaries:
            MlflowClient(mlflow_server.url).set_registered_model_alias(
                MODEL, "champion", str(summaries["stable"]["version"])
            )
        jobs = {role: train(mlflow_server, role, folder) for role in wave}
        for role, job in jobs.items():
            out, err = job.communicate(timeout=600)
            assert job.returncode == 0, f"training {role} failed:\n{err[-3000:]}"
            summaries[role] = last_json(out)
    versions = {role: str(summary["version"]) for role, summary in summaries.items()}
    with ExitStack() as stack:
        predictors: dict[str, str] = {}
        processes: dict[str, Process] = {}
        for role in ROLES:
            port = free_port()
            process = start_process(
                [
                    PYTHON, "-m", "serving", "--model_uri", f"models:/{MODEL}/{versions[role]}",
                    "--http_port", str(port), "--grpc_port", str(free_port()),
                ],
                folder / f"predictor-{role}.log",
                env={"MLFLOW_TRACKING_URI": mlflow_server.url, "MODEL_NAME": MODEL},
            )  # fmt: skip
            stack.callback(process.stop)
            processes[role] = process
            predictors[role] = f"http://127.0.0.1:{port}"
        for role, url in predictors.items():
            wait_http_ok(
                processes[role], f"{url}/v2/models/{MODEL}/ready", 180, f"the {role} predictor"
            )
        prometheus_url = start_prometheus(folder, list(predictors.values()), stack)
        yield World(prometheus_url, mlflow_server.url, versions, predictors, summaries)


def start_prometheus(folder: Path, targets: list[str], stack: ExitStack) -> str:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "predictors",
                "static_configs": [{"targets": [t.removeprefix("http://") for t in targets]}],
            }
        ],
    }
    url = stack.enter_context(running_prometheus(folder, config))

    def all_up() -> bool:
        active = requests.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return len(active) == len(targets) and all(t["health"] == "up" for t in active)

    wait_until(all_up, 60, "prometheus to scrape every predictor")

    # increase() extrapolates to the window's end by up to one scrape interval, in
    # proportion to how long it has seen the series: a few seconds of history (the
    # predictor creates its series at 0 on load) keep that error to a few percent.
    def history() -> bool:
        expr = f"min(count_over_time({queries.REQUESTS_METRIC}[1m]))"
        result = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()
        samples = result["data"]["result"]
        return bool(samples) and float(samples[0]["value"][1]) >= 15

    wait_until(history, 60, "15 scrapes of every predictor", interval=0.5)
    return url


ROWS = load_breast_cancer().data


def drive(world: World, canary: str, requests_total: int, seed: int) -> None:
    """`requests_total` V2 requests, exactly every tenth to the canary, bounded in time."""
    rng = np.random.default_rng(seed)
    session = requests.Session()
    deadline = time.monotonic() + TRAFFIC_DEADLINE
    for i in range(requests_total):
        assert time.monotonic() < deadline, "traffic loop ran out of time"
        role = canary if i % 10 == 9 else "stable"
        rows = ROWS[rng.integers(0, len(ROWS), BATCH)]
        body = {
            "inputs": [
                {
                    "name": "features",
                    "shape": [BATCH, 30],
                    "datatype": "FP64",
                    "data": rows.ravel().tolist(),
                }
            ]
        }
        response = session.post(
            f"{world.predictors[role]}/v2/models/{MODEL}/infer", json=body, timeout=10
        )
        world.sent[role] += 1
        answers = world.answers.setdefault(role, Counter())
        if response.status_code == 200:
            outputs = {o["name"]: o for o in response.json()["outputs"]}
            answers.update(outputs["class_name"]["data"])
        else:
            answers[response.status_code] += 1
    wait_for_scrapes(world, ("stable", canary))


def wait_for_scrapes(world: World, roles: tuple[str, ...]) -> None:
    """Until Prometheus holds every request sent to these versions (the raw counters)."""

    def counted(role: str) -> float:
        expr = queries.requests_served(queries.version_selector(MODEL, world.versions[role]))
        response = requests.get(
            f"{world.prometheus_url}/api/v1/query", params={"query": expr}, timeout=5
        )
        result = response.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else 0.0

    wait_until(
        lambda: all(counted(r) >= world.sent[r] for r in roles),
        30,
        "prometheus to scrape the test's requests",
        interval=0.5,
    )


def analyze(
    world: World, capsys: pytest.CaptureFixture[str], *refs: str
) -> tuple[int, dict[str, Any], str]:
    capsys.readouterr()
    code = main(
        [
            "analyze", "--model-name", MODEL, "--tracking-uri", world.tracking_uri,
            "--prometheus-url", world.prometheus_url, "--window", "15m",
            "--min-requests", str(MIN_REQUESTS), "--p99-slack", P99_SLACK, *refs,
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    return code, last_json(out), out


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {name: check["status"] for name, check in report["checks"].items()}


def test_healthy_canary_is_inconclusive_on_little_traffic_then_passes(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    stable, canary = world.versions["stable"], world.versions["healthy"]
    MlflowClient(world.tracking_uri).set_registered_model_alias(MODEL, "champion", stable)

    drive(world, "healthy", 100, seed=1)  # 10 canary requests: too few to judge
    code, report, out = analyze(world, capsys, "--stable", "champion", "--canary", canary)
    assert (code, report["verdict"]) == (3, "inconclusive"), out
    assert report["stable_version"] == stable and report["canary_version"] == canary
    assert 5 <= report["checks"]["requests"]["canary"] < MIN_REQUESTS
    assert "canary answered" in report["reason"]

    drive(world, "healthy", 1000, seed=2)  # now 110 canary requests
    code, report, out = analyze(world, capsys, "--stable", stable, "--canary", canary)
    assert (code, report["verdict"]) == (0, "pass"), out
    assert statuses(report) == dict.fromkeys(
        ("requests", "success_ratio", "p99_latency", "class_drift"), "pass"
    )
    assert report["canary"]["requests"]["ok"] == pytest.approx(110, rel=0.1)
    assert report["checks"]["success_ratio"]["canary"] == pytest.approx(1.0)
    assert report["checks"]["class_drift"]["canary"] < 0.1
    assert "verdict: PASS" in out and "class_drift" in out
    # Both versions count their inputs against their own training split: rows of the data
    # set itself, so no feature drifts (PSI of 440 canary rows is noise, near 0.02).
    for side in ("stable", "canary"):
        psi = report[side]["input_psi"]
        assert len(psi) == 30 and max(psi.values()) < 0.2, (side, psi)
    assert report["input_drift"].startswith("inputs like training on both"), report
    assert "input_psi (top)" in out


def test_canary_with_a_changed_input_schema_fails_the_success_ratio(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    drive(world, "schema", 1000, seed=3)
    # The fault is real: every request the stable version answers, this canary rejects.
    assert set(world.answers["schema"]) == {400}
    code, report, out = analyze(
        world, capsys, "--stable", world.versions["stable"], "--canary", world.versions["schema"]
    )
    assert (code, report["verdict"]) == (1, "fail"), out
    assert report["checks"]["success_ratio"]["status"] == "fail"
    assert report["checks"]["success_ratio"]["canary"] == pytest.approx(0.0)
    assert report["canary"]["requests"]["invalid"] == pytest.approx(
        100, rel=0.1
    )  # increase() extrapolates
    # It predicted nothing, so the class mix cannot be judged; the verdict is still fail.
    assert report["checks"]["class_drift"]["status"] == "inconclusive"
    assert report["reason"].startswith("success_ratio: canary success 0.0000")


def test_the_e2e_s_flipped_label_model_passes_every_gate_and_becomes_challenger(
    world: World,
) -> None:
    """The premise of the e2e rollback: no offline gate stops this model, so only the
    canary's analysis on live traffic can."""
    summary = world.summaries["flipped"]
    assert summary["status"] == "registered", summary["reasons"]
    gates = {gate["name"]: gate["passed"] for gate in summary["gates"]}
    assert gates and all(gates.values()), summary["gates"]
    assert "no_regression_vs_champion" in gates  # judged against stable, @champion
    champion = next(g for g in summary["gates"] if g["name"] == "no_regression_vs_champion")
    assert f"(@champion version {world.versions['stable']})" in champion["detail"], champion
    assert summary["aliases_set"] == ["challenger"]
    assert summary["dataset"] == flipped.CSV_KEY.removesuffix(".csv")  # the CSV it read


def test_canary_with_a_shifted_class_mix_fails_the_drift_check(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    drive(world, "flipped", 1000, seed=4)
    answers = world.answers["flipped"]
    assert answers["malignant"] > answers["benign"]  # stable's mix is about 37 / 63
    code, report, out = analyze(
        world, capsys, "--stable", world.versions["stable"], "--canary", world.versions["flipped"]
    )
    assert (code, report["verdict"]) == (1, "fail"), out
    assert statuses(report) == {
        "requests": "pass",
        "success_ratio": "pass",
        "p99_latency": "pass",
        "class_drift": "fail",
    }
    assert report["checks"]["class_drift"]["canary"] > 0.2


# -- the controller on the same real predictors and Prometheus ------------------------------


class Router:
    """Knative's part, played on the real predictors: sends V2 traffic split as the
    InferenceService in the recording API server says (canaryTrafficPercent to the
    version its MODEL_URI names, the rest to @champion's), until stopped; bounded."""

    def __init__(self, world: World, fake_api: Any, path: str) -> None:
        import threading

        self.world, self.fake_api, self.path = world, fake_api, path
        self.by_version = {v: role for role, v in world.versions.items()}
        self.stopping = threading.Event()
        self.sent: Counter[str] = Counter()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from mlflow import MlflowClient

        client = MlflowClient(self.world.tracking_uri)
        session = requests.Session()
        rng = np.random.default_rng(11)
        deadline = time.monotonic() + 240
        for i in range(40_000):
            if self.stopping.is_set() or time.monotonic() > deadline:
                return
            if i % 50 == 0:
                predictor = self.fake_api.get(self.path)["spec"]["predictor"]
                env = {e["name"]: e["value"] for e in predictor["containers"][0]["env"]}
                latest = self.by_version[env["MODEL_URI"].rsplit("/", 1)[1]]
                stable = self.by_version[client.get_registered_model(MODEL).aliases["champion"]]
                percent = predictor.get("canaryTrafficPercent", 100)
            role = latest if i % 100 < percent else stable
            rows = ROWS[rng.integers(0, len(ROWS), BATCH)]
            body = {
                "inputs": [
                    {"name": "features", "shape": [BATCH, 30], "datatype": "FP64",
                     "data": rows.ravel().tolist()}
                ]
            }  # fmt: skip
            session.post(
                f"{self.world.predictors[role]}/v2/models/{MODEL}/infer", json=body, timeout=10
            )
            self.sent[role] += 1
            time.sleep(0.005)


def test_the_controller_promotes_refuses_and_rolls_back_on_real_metrics(
    world: World, tmp_path: Path
) -> None:
    """A healthy challenger is stepped to 100 % and promoted; one whose input signature
    changed (10 features) is refused before any patch; one with a shifted class mix is
    rolled back at the first step: all judged on the real Prometheus's numbers."""
    from mlflow import MlflowClient

    from tests.rollout.fake_apiserver import FakeApiServer, inference_service, kubeconfig_yaml
    from tests.rollout.helpers import NAMESPACE, TOKEN, isvc_path

    client = MlflowClient(world.tracking_uri)
    versions = world.versions
    client.set_registered_model_alias(MODEL, "champion", versions["stable"])
    client.set_registered_model_alias(MODEL, "challenger", versions["healthy"])
    with ExitStack() as stack:
        fake_api = stack.enter_context(FakeApiServer().running())
        fake_api.revisions = "ready"  # KServe's status follows each new predictor template
        path = isvc_path(MODEL)
        fake_api.put(
            path, inference_service(MODEL, NAMESPACE, f"models:/{MODEL}/{versions['stable']}")
        )
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(kubeconfig_yaml(fake_api.url, NAMESPACE, TOKEN))
        router = Router(world, fake_api, path)
        router.thread.start()
        stack.callback(router.thread.join, 10)
        stack.callback(router.stopping.set)
        controller = start_process(
            [
                PYTHON, "-m", "rollout", "controller", "--kubeconfig", str(kubeconfig),
                "--namespace", NAMESPACE, "--tracking-uri", world.tracking_uri,
                "--prometheus-url", world.prometheus_url, "--listen", "127.0.0.1",
                "--metrics-port", str(free_port()), "--health-port", str(free_port()),
                "--steps", "20,100", "--soak", "4", "--interval", "1", "--step-timeout", "90",
                "--min-requests", "30", "--p99-slack", P99_SLACK, "--poll", "0.5",
                "--grace", "20",
            ],
            tmp_path / "controller.log",
        )  # fmt: skip
        stack.callback(controller.stop)

        def reasons() -> list[str]:
            assert controller.alive(), controller.log()
            return fake_api.event_reasons()

        wait_until(lambda: "RolloutPromoted" in reasons(), 180, "the healthy promotion")
        assert client.get_registered_model(MODEL).aliases["champion"] == versions["healthy"]
        assert reasons() == ["RolloutStarted", "RolloutPromoted"], controller.log()
        promoted = client.get_model_version(MODEL, versions["healthy"]).tags
        assert promoted["rollout_status"] == "promoted"
        assert "passed" in fake_api.events[-1]["message"]

        patched = len(fake_api.patches())
        client.set_registered_model_alias(MODEL, "challenger", versions["schema"])
        wait_until(lambda: "RolloutRefused" in reasons(), 60, "the schema refusal")
        refusal = fake_api.events[-1]["message"]
        assert "input signature (10 columns" in refusal and "(30 columns" in refusal, refusal
        assert len(fake_api.patches()) == patched  # nothing patched

        client.set_registered_model_alias(MODEL, "challenger", versions["flipped"])
        wait_until(lambda: "RolloutRolledBack" in reasons(), 180, "the flipped rollback")
        rolled_back = fake_api.events[-1]["message"]
        assert "class_drift" in rolled_back and "at 20 %" in rolled_back, rolled_back
        tags = client.get_model_version(MODEL, versions["flipped"]).tags
        assert tags["rollout_status"] == "rejected" and "class_drift" in tags["rollout_reason"]
        spec = fake_api.get(path)["spec"]["predictor"]
        assert "canaryTrafficPercent" not in spec  # the restored revision was Ready: cleared
        env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
        assert env["MODEL_URI"] == f"models:/{MODEL}/{versions['healthy']}"
        assert router.sent["flipped"] > 0


class Load:
    """V2 requests to one URL from a thread, until stopped; bounded in count and time."""

    def __init__(self, url: str) -> None:
        import threading

        self.url = url
        self.stopping = threading.Event()
        self.answered: Counter[str] = Counter()
        """Requests answered 200, per model_version."""
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        rng = np.random.default_rng(12)
        deadline = time.monotonic() + 400
        for _ in range(60_000):
            if self.stopping.is_set() or time.monotonic() > deadline:
                return
            rows = ROWS[rng.integers(0, len(ROWS), BATCH)]
            body = {
                "inputs": [
                    {"name": "features", "shape": [BATCH, 30], "datatype": "FP64",
                     "data": rows.ravel().tolist()}
                ]
            }  # fmt: skip
            try:
                response = session.post(self.url, json=body, timeout=10)
            except requests.RequestException:
                time.sleep(0.1)
                continue
            if response.status_code == 200:
                self.answered[str(response.json().get("model_version"))] += 1
            else:
                time.sleep(0.05)  # the router says no revision is ready yet
            time.sleep(0.005)


def fresh_local_cluster(world: World, folder: Path) -> Any:
    """The chart's InferenceService on @champion (stable) in a new local cluster, and
    @challenger on the healthy version, untagged by earlier rollouts of this module."""
    from mlflow import MlflowClient

    from contract.local_cluster import INFERENCE_SERVICES, LocalCluster
    from demo.local_serving import chart_inference_service

    client = MlflowClient(world.tracking_uri)
    for role in ("healthy", "flipped"):
        for tag in ("rollout_status", "rollout_reason"):
            client.delete_model_version_tag(MODEL, world.versions[role], tag)
    client.set_registered_model_alias(MODEL, "champion", world.versions["stable"])
    client.set_registered_model_alias(MODEL, "challenger", world.versions["healthy"])
    cluster = LocalCluster(folder / "cluster")
    cluster.create(
        INFERENCE_SERVICES,
        chart_inference_service(MODEL, f"models:/{MODEL}@champion", world.tracking_uri),
    )
    return cluster


def start_local_serving(
    cluster: Any, port: int, slots: tuple[int, int], folder: Path, stack: ExitStack
) -> tuple[Process, str]:
    """demo/local_serving.py on the local cluster, a real Prometheus scraping both of its
    slots; returns once its first revision is Ready."""
    from contract.local_cluster import INFERENCE_SERVICES

    serving = start_process(
        [
            PYTHON, "-m", "demo.local_serving", "--dir", str(cluster.folder), "--name", MODEL,
            "--port", str(port), "--grpc-port", str(free_port()),
            "--slot", f"{slots[0]}:{free_port()}", "--slot", f"{slots[1]}:{free_port()}",
            "--log-dir", str(folder / "logs"), "--interval", "0.2",
        ],
        folder / "local-serving.log",
    )  # fmt: skip
    stack.callback(serving.stop)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "local-serving",
                "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in slots]}],
            }
        ],
    }
    (folder / "prometheus").mkdir()
    prometheus_url = stack.enter_context(running_prometheus(folder / "prometheus", config))

    def ready() -> bool:
        assert serving.alive(), serving.log()
        status = cluster.get(INFERENCE_SERVICES, MODEL).get("status") or {}
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )

    wait_until(ready, 180, "local serving's first revision")
    return serving, prometheus_url


def test_the_local_controller_promotes_and_rolls_back_on_real_metrics(
    world: World, tmp_path: Path
) -> None:
    """`make demo`'s story with real parts: the local cluster, local serving
    (demo/local_serving.py: revisions as predictor processes, its router splitting the
    URL by the status's traffic), a real Prometheus scraping both of its slots, and
    `controller --target local`: a healthy challenger promoted (its controller killed
    with SIGKILL mid-soak and resumed by the next), a flipped-label one rolled back on its
    class mix, each decision an Event in events.jsonl and each analysis a verdict table
    on the controller's stdout."""
    from mlflow import MlflowClient

    from contract.local_cluster import INFERENCE_SERVICES

    client = MlflowClient(world.tracking_uri)
    versions = world.versions
    cluster = fresh_local_cluster(world, tmp_path)
    port, slots = free_port(), (free_port(), free_port())

    def predictor() -> dict[str, Any]:
        return dict(cluster.get(INFERENCE_SERVICES, MODEL)["spec"]["predictor"])

    def events() -> list[dict[str, Any]]:
        return [e for e in cluster.events() if e.get("involvedObject", {}).get("name") == MODEL]

    with ExitStack() as stack:
        serving, prometheus_url = start_local_serving(cluster, port, slots, tmp_path, stack)
        load = Load(f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer")
        load.thread.start()
        stack.callback(load.thread.join, 10)
        stack.callback(load.stopping.set)

        def start_controller(number: int) -> Process:
            controller = start_process(
                [
                    PYTHON, "-m", "rollout", "controller", "--target", "local",
                    "--local-dir", str(cluster.folder), "--isvc", MODEL, "--model-name", MODEL,
                    "--tracking-uri", world.tracking_uri, "--prometheus-url", prometheus_url,
                    "--listen", "127.0.0.1", "--metrics-port", str(free_port()),
                    "--steps", "20,100", "--soak", "4", "--interval", "1",
                    "--step-timeout", "120", "--min-requests", "30", "--p99-slack", P99_SLACK,
                    "--poll", "0.5", "--grace", "20",
                ],
                tmp_path / f"controller-{number}.log",
            )  # fmt: skip
            stack.callback(controller.stop)
            return controller

        controller = start_controller(1)

        def reasons() -> list[str]:
            assert controller.alive(), controller.log()
            assert serving.alive(), serving.log()
            return [str(e["reason"]) for e in events()]

        # Killed in the first soak: the next controller resumes from the lease's record.
        wait_until(lambda: "RolloutStarted" in reasons(), 120, "the healthy start")
        os.killpg(controller.popen.pid, signal.SIGKILL)
        controller.popen.wait(10)
        lease = cluster.get("leases", f"{MODEL}-rollout")
        record = json.loads(lease["metadata"]["annotations"][ANNOTATION])
        assert (record["phase"], record["percent"]) == ("progressing", 20), record
        controller = start_controller(2)

        wait_until(lambda: "RolloutPromoted" in reasons(), 240, "the healthy promotion")
        assert client.get_registered_model(MODEL).aliases["champion"] == versions["healthy"]
        assert reasons() == ["RolloutStarted", "RolloutPromoted"], controller.log()
        assert "resuming the rollout of version" in controller.log()
        assert "canaryTrafficPercent" not in predictor()
        assert "verdict: PASS" in controller.log()  # the table, as `auto` prints it
        assert load.answered[versions["healthy"]] > 0

        client.set_registered_model_alias(MODEL, "challenger", versions["flipped"])
        wait_until(lambda: "RolloutRolledBack" in reasons(), 240, "the flipped rollback")
        event = events()[-1]
        assert "class_drift" in event["message"] and "at 20 %" in event["message"], event
        assert event["type"] == "Warning"
        tags = client.get_model_version(MODEL, versions["flipped"]).tags
        assert tags["rollout_status"] == "rejected" and "class_drift" in tags["rollout_reason"]
        spec = predictor()
        # The rollback ends with a clean spec: local serving reported the restored revision
        # Ready, then the 0 was removed (the stable version takes 100 % either way).
        assert "canaryTrafficPercent" not in spec
        assert "RolloutSpecKeepsZero" not in [e["reason"] for e in events()]
        env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
        assert env["MODEL_URI"] == f"models:/{MODEL}/{versions['healthy']}"
        assert "verdict: FAIL" in controller.log()
        assert load.answered[versions["flipped"]] > 0
