"""`make demo`: the whole lifecycle on one machine. Train → register → serve an
InferenceService → load test → the rollout controller promotes a good version on its own
→ and rolls a bad one back on its own, each with its verdict tables.

Every service is a plain local process on 127.0.0.1, tracked by a PID record under the
state folder (`processes.py`). Kubernetes and KServe have local stand-ins: the local
cluster (contract/local_cluster.py, a folder of JSON objects with the API server's
semantics) holds the InferenceService, and demo/local_serving.py does what KServe and
Knative do with it (revisions as predictor processes, status, the traffic split on one
URL). The rollout controller runs unchanged but for `--target local`.

Running it again reuses what still runs with the same settings, and skips a training, or a
rollout, whose result the registry already holds: a second `make demo` only repeats the
first load test.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import requests

from contract import metric_names, registry_tags, uris
from contract.local_cluster import INFERENCE_SERVICES, AlreadyExists, LocalCluster
from contract.uris import CHALLENGER, CHAMPION
from demo import prediction_log, registry, services
from demo.local_serving import chart_inference_service
from demo.processes import DemoError, PortBusy, Record, Service, Supervisor, log_tail
from demo.settings import REPO_ROOT, STATE_ENTRIES, DemoSettings

LOCUSTFILE = REPO_ROOT / "loadtest" / "locustfile.py"
# The chart's alerting and recording rules, rendered for a release `demo` in namespace
# `demo` (tests/chart/demo_rules.py writes it; a chart test keeps it equal to the chart).
# The scrape targets get the labels those rules select: that namespace, the job the
# chart's PodMonitor would give them, and a pod name each.
RULES_FILE = REPO_ROOT / "demo" / "prometheus-rules.yaml"
RULES_MODEL_NAME = "breast-cancer"
SCRAPE_NAMESPACE = "demo"
SCRAPE_JOB = "demo/demo-mlops-predictor"
STEPS = 10
FIRST_TRAINING = ("--candidates", "logreg")
# Both challengers score within a hair of the champion's test ROC AUC, either way (a
# smoke run's test split is small); `--max-regression 0.02` lets such a tie through the
# no-regression gate, which would still stop a drop above 0.02.
TIE = ("--max-regression", "0.02")
# The good challenger: the same recipe with another seed.
GOOD_TRAINING = ("--seed", "7", "--candidates", "logreg", *TIE)
BAD_DATASET = "breast-cancer-export"
"""The mislabelled export: `<name>.csv`, and the `dataset` tag training gives its versions."""
TRAINING_TIMEOUT = 900
READY_TIMEOUT = 240
ROLLOUT_TIMEOUT = 240
"""Bound of the wait for one rollout's outcome (each takes well under 90 s here)."""
ENDED = {registry_tags.PROMOTED: "promoted", registry_tags.ROLLED_BACK: "rolled back"}
END_EVENTS = frozenset({"RolloutPromoted", "RolloutRolledBack", "RolloutAbandoned"})
P99_SLACK = "0.25"
"""Seconds added to the canary's allowed p99 (the chart's default is 0.01): here both
revisions, locust, Prometheus and the trainings share a laptop's cores, so one slow
moment decides a p99; the demo's story is the class mix and the success ratio."""
LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (\w+) [\w.]+: ")


class Demo:
    def __init__(self, settings: DemoSettings, out: TextIO | None = None) -> None:
        self.s = settings
        self.out = out or sys.stdout
        self.supervisor = Supervisor(
            settings.run_dir, settings.log_dir, REPO_ROOT, bin_dir=settings.bin_dir
        )
        self.prometheus_bin = shutil.which("prometheus")

    # -- output ----------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def step(self, number: int, title: str) -> None:
        self.say(f"\n==> [{number}/{STEPS}] {title}")

    def report_service(self, record: Record, reused: bool, what: str) -> None:
        how = "reusing" if reused else "started"
        self.say(f"    {what}: {how} pid {record.pid} (log {self.rel(Path(record.log))})")

    def rel(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    # -- the flow ----------------------------------------------------------------------------

    def up(self) -> int:
        s = self.s
        s.state_dir.mkdir(parents=True, exist_ok=True)
        self.check_ports()

        self.step(1, f"MLflow server (SQLite and artifacts in {self.rel(s.mlflow_dir)})")
        self.ensure(self.mlflow_service(), "MLflow")

        self.step(2, f"First training: register a version of '{s.model_name}'")
        champion = self.train_first()

        self.step(3, f"InferenceService {s.model_name} in the local cluster, served locally")
        self.create_inference_service(self.start_prediction_log())
        self.ensure(self.serving_service(), "local serving (KServe + Knative stand-in)")
        self.wait_isvc_ready()

        self.step(4, "One V2 request to the InferenceService's URL")
        self.show_one_request()

        self.step(5, f"Load test: {s.users} users for {s.load_seconds}s")
        self.load_test("stable", s.load_seconds)

        self.step(6, "Prometheus")
        self.start_prometheus()

        self.step(7, "The rollout controller, on the local cluster")
        self.start_controller()

        self.step(8, "Second training: a good challenger; the controller rolls it out")
        good = self.rollout("good", lambda: self.train_challenger("3", GOOD_TRAINING), champion)

        self.step(9, "Third training: a bad challenger that passes every offline gate")
        bad = self.rollout("bad", self.train_bad, good[0] if good[1] == "promoted" else champion)

        self.step(10, "Where the registry stands")
        self.show_registry()
        self.where(champion, good, bad)
        return 0

    def check_ports(self) -> None:
        s = self.s
        services = [
            ("mlflow", [s.mlflow_port]),
            ("local-serving", [s.predictor_port, s.predictor_grpc_port, s.canary_port,
                               s.canary_grpc_port, s.slot_b_port, s.slot_b_grpc_port]),
            ("rollout-controller", [s.controller_port]),
        ]  # fmt: skip
        if self.prometheus_bin:
            services.append(("prometheus", [s.prometheus_port]))
        if prediction_log.missing() is None:
            services += [("postgres", [s.postgres_port]), ("predictionlog", [s.predictionlog_port])]
        problems = self.supervisor.busy_ports(services)
        if problems:
            raise PortBusy(
                "; ".join(problems) + " by a process this demo did not start. Stop it, or "
                "choose other ports: make demo MLFLOW_PORT=... PREDICTOR_PORT=... "
                "PREDICTOR_GRPC_PORT=... CANARY_PORT=... CANARY_GRPC_PORT=... SLOT_B_PORT=... "
                "SLOT_B_GRPC_PORT=... CONTROLLER_PORT=... PROMETHEUS_PORT=... POSTGRES_PORT=... "
                "PREDICTIONLOG_PORT=..."
            )

    def ensure(self, service: Service, what: str, timeout: float = 120) -> Record:
        record, reused = self.supervisor.ensure(service, timeout)
        self.report_service(record, reused, what)
        return record

    # -- services ----------------------------------------------------------------------------

    def mlflow_service(self) -> Service:
        s = self.s
        root = s.mlflow_dir.resolve()
        root.mkdir(parents=True, exist_ok=True)
        return Service(
            name="mlflow",
            argv=tuple(services.mlflow_server_args(root, s.mlflow_port, bin_dir=s.bin_dir)),
            ports=(s.mlflow_port,),
            ready_url=f"{s.mlflow_url}/health",
            env=dict(services.MLFLOW_SERVER_ENV),
        )

    @property
    def cluster(self) -> LocalCluster:
        return LocalCluster(self.s.cluster_dir)

    def start_prediction_log(self) -> str | None:
        """PostgreSQL and the prediction log, where initdb is installed; the sink's URL."""
        s = self.s
        why = prediction_log.missing()
        if why is not None:
            self.say(f"    prediction log: skipped, {why}")
            return None
        record, reused = self.supervisor.ensure(
            prediction_log.postgres_service(s), 60, lambda: prediction_log.database_ready(s)
        )
        self.report_service(record, reused, f"PostgreSQL on 127.0.0.1:{s.postgres_port}")
        self.ensure(prediction_log.sink_service(s), f"prediction log on {s.predictionlog_url}")
        return f"{s.predictionlog_url}/"

    def create_inference_service(self, logger_url: str | None = None) -> None:
        """`kubectl apply` of the chart's InferenceService, serving @champion; with
        KServe's payload logger pointing at `logger_url` when there is one."""
        s = self.s
        uri = uris.alias_uri(s.model_name, CHAMPION)
        obj = chart_inference_service(s.model_name, uri, s.mlflow_url)
        if logger_url is not None:
            obj["spec"]["predictor"]["logger"] = {"mode": "all", "url": logger_url}
        try:
            self.cluster.create(INFERENCE_SERVICES, obj)
            self.say(f"    created inferenceservices/{s.model_name} (MODEL_URI {uri}) in "
                     f"{self.rel(s.cluster_dir)}/")  # fmt: skip
        except AlreadyExists:
            self.say(f"    inferenceservices/{s.model_name} is already in "
                     f"{self.rel(s.cluster_dir)}/ (kept as the rollouts left it)")  # fmt: skip

    def serving_service(self) -> Service:
        s = self.s
        argv = (
            s.python, "-m", "demo.local_serving", "--dir", str(s.cluster_dir.resolve()),
            "--name", s.model_name, "--port", str(s.predictor_port),
            "--grpc-port", str(s.predictor_grpc_port),
            "--slot", f"{s.canary_port}:{s.canary_grpc_port}",
            "--slot", f"{s.slot_b_port}:{s.slot_b_grpc_port}",
            "--log-dir", str(s.log_dir.resolve()),
        )  # fmt: skip
        return Service(
            name="local-serving",
            argv=argv,
            ports=(s.predictor_port, s.predictor_grpc_port, s.canary_port, s.canary_grpc_port,
                   s.slot_b_port, s.slot_b_grpc_port),
            ready_url=f"{s.predictor_url}/.local-serving/healthz",
        )  # fmt: skip

    def isvc(self) -> dict[str, Any]:
        return self.cluster.get(INFERENCE_SERVICES, self.s.model_name)

    def wait_isvc_ready(self) -> None:
        """Until the status says Ready, as `kubectl wait --for=condition=Ready isvc/...`."""
        deadline = time.monotonic() + READY_TIMEOUT
        ready: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self.supervisor_check("local-serving")
            status = self.isvc().get("status") or {}
            ready = next(
                (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {}
            )
            if ready.get("status") == "True":
                predictor = status["components"]["predictor"]
                traffic = ", ".join(
                    f"{t['revisionName']} {t['percent']} %" for t in predictor.get("traffic", [])
                )
                self.say(f"    Ready: {status.get('url')} -> {traffic}")
                return
            time.sleep(0.5)
        raise DemoError(
            f"the InferenceService was not Ready after {READY_TIMEOUT}s ({ready}); see "
            f"{self.rel(self.s.log_dir)}/local-serving.log and its revisions' logs there"
        )

    def supervisor_check(self, name: str) -> None:
        if self.supervisor.running(name) is None:
            log = self.s.log_dir / f"{name}.log"
            raise DemoError(f"{name} is not running; the end of {self.rel(log)}:\n{log_tail(log)}")

    def controller_service(self) -> Service:
        s = self.s
        argv = (
            s.python, "-m", "rollout", "controller", "--target", "local",
            "--local-dir", str(s.cluster_dir.resolve()), "--isvc", s.model_name,
            "--model-name", s.model_name, "--tracking-uri", s.mlflow_url,
            "--prometheus-url", s.prometheus_url, "--listen", "127.0.0.1",
            "--metrics-port", str(s.controller_port),
            "--steps", s.steps, "--soak", str(s.canary_seconds),
            "--interval", "3", "--step-timeout", "60", "--min-requests", str(s.min_requests),
            "--p99-slack", P99_SLACK, "--poll", "1", "--grace", "10",
        )  # fmt: skip
        return Service(
            name="rollout-controller",
            argv=argv,
            ports=(s.controller_port,),
            ready_url=f"http://127.0.0.1:{s.controller_port}/readyz",
        )

    def start_controller(self) -> None:
        s = self.s
        if not self.prometheus_bin:
            raise DemoError(
                "prometheus is not on PATH: the rollout controller judges canaries on its "
                "metrics (Debian/Ubuntu: apt-get install prometheus)"
            )
        service = self.controller_service()
        self.say(f"    python -m rollout {' '.join(service.argv[3:])}")
        self.ensure(service, "rollout controller")
        self.say(f"    schedule {s.steps} %, {s.canary_seconds}s of traffic per step before "
                 f"its analysis; it watches @{CHALLENGER} of {s.model_name}")  # fmt: skip

    def prometheus_config(self, rules: Path) -> str:
        s = self.s
        targets = "".join(
            f'      - targets: ["127.0.0.1:{port}"]\n'
            f"        labels: {{namespace: {SCRAPE_NAMESPACE}, pod: {pod}}}\n"
            for pod, port in (
                (f"{s.model_name}-predictor-slot-a", s.canary_port),
                (f"{s.model_name}-predictor-slot-b", s.slot_b_port),
            )
        )
        return (
            "# Written by `make demo`: both revision slots of the local InferenceService,\n"
            "# scraped every second so a short rollout step already gives the analysis a\n"
            "# window of samples, and the\n"
            "# chart's alerting and recording rules.\n"
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: [{json.dumps(str(rules))}]\n"
            f"scrape_configs:\n  - job_name: {SCRAPE_JOB}\n"
            f"    static_configs:\n{targets}"
        )

    def write_rules(self, folder: Path) -> Path:
        """The chart's rules for this demo's model name (they are rendered for the default)."""
        text = RULES_FILE.read_text()
        if self.s.model_name != RULES_MODEL_NAME:
            text = text.replace(
                f'model_name="{RULES_MODEL_NAME}"', f'model_name="{self.s.model_name}"'
            )
            text = text.replace(
                f"model_name: {RULES_MODEL_NAME}", f"model_name: {self.s.model_name}"
            )
            text = text.replace(f"of {RULES_MODEL_NAME} is", f"of {self.s.model_name} is")
        path = folder / "rules.yaml"
        path.write_text(text)
        return path

    def start_prometheus(self) -> None:
        s = self.s
        if not self.prometheus_bin:
            self.say(
                "    prometheus is not on PATH: no metrics store, so no canary analysis "
                "(Debian/Ubuntu: apt-get install prometheus)"
            )
            return
        root = s.prometheus_dir.resolve()
        root.mkdir(parents=True, exist_ok=True)
        config = self.prometheus_config(self.write_rules(root))
        (root / "prometheus.yml").write_text(config)
        service = Service(
            name="prometheus",
            argv=(
                self.prometheus_bin,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                "--storage.tsdb.retention.time=1d",
                f"--web.listen-address=127.0.0.1:{s.prometheus_port}",
            ),
            ports=(s.prometheus_port,),
            ready_url=f"{s.prometheus_url}/-/ready",
            config=config,
        )
        self.ensure(service, "Prometheus")
        slots = " and ".join(f"{url}/metrics" for url in s.slot_urls)
        self.say(f"    scraping both revision slots, {slots}, every 1s")
        self.say(
            "    with the chart's alerting and recording rules (alerts hold 10s here, 5m in "
            f"the chart): {s.prometheus_url}/alerts"
        )

    # -- training ----------------------------------------------------------------------------

    def train(self, label: str, args: tuple[str, ...]) -> tuple[int, dict[str, Any]]:
        s = self.s
        log = s.log_dir / f"train-{label}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [
            s.python, "-m", "training", "--tracking-uri", s.mlflow_url,
            "--model-name", s.model_name, "--smoke", *args,
        ]  # fmt: skip
        self.say(f"    python -m training {' '.join(command[3:])}")
        with log.open("w") as err:
            result = subprocess.run(
                command,
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                timeout=TRAINING_TIMEOUT,
                check=False,
            )
        with log.open("a") as err:
            err.write(result.stdout)
        lines = result.stdout.strip().splitlines()
        try:
            summary: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        except ValueError:
            summary = {}
        if result.returncode not in (0, 3) or not summary:
            raise DemoError(
                f"the training exited {result.returncode}; the end of {self.rel(log)}:\n"
                f"{log_tail(log)}"
            )
        return result.returncode, summary

    def describe_run(self, summary: dict[str, Any]) -> None:
        metrics = summary.get("metrics", {})
        self.say(
            f"    {summary.get('candidate')} {json.dumps(summary.get('params', {}))}: "
            f"test ROC AUC {metrics.get('test_roc_auc', float('nan')):.4f}, "
            f"malignant recall {metrics.get('test_malignant_recall', float('nan')):.4f}"
        )
        for gate in summary.get("gates", []):
            mark = "pass" if gate.get("passed") else "FAIL"
            self.say(f"    gate {gate.get('name')}: {mark} ({gate.get('detail')})")

    def train_first(self) -> str:
        s = self.s
        champion = registry.alias_version(s.mlflow_url, s.model_name, CHAMPION)
        if champion is not None:
            self.say(f"    already registered: version {champion} is @champion (no training)")
            return champion
        code, summary = self.train("1", FIRST_TRAINING)
        self.describe_run(summary)
        if code != 0:
            raise DemoError(f"the gates rejected the first version: {summary.get('reasons')}")
        aliases = " and ".join(f"@{a}" for a in summary.get("aliases_set", []))
        self.say(f"    registered version {summary['version']}, now {aliases}")
        champion = registry.alias_version(s.mlflow_url, s.model_name, CHAMPION)
        if champion is None:
            raise DemoError("the training registered a version but no @champion is set")
        return champion

    def train_challenger(self, label: str, args: tuple[str, ...]) -> str:
        """Train a version that moves @challenger (the controller's cue); its number."""
        s = self.s
        code, summary = self.train(label, args)
        self.describe_run(summary)
        if code != 0:
            raise DemoError(
                f"the gates rejected version {summary.get('version')}: {summary.get('reasons')}; "
                f"see {self.rel(s.log_dir / f'train-{label}.log')}"
            )
        self.say(f"    registered version {summary['version']} and moved @challenger to it")
        return str(summary["version"])

    def write_bad_dataset(self) -> Path:
        """The breast-cancer data exported to CSV with its labels swapped: a realistic
        pipeline bug (a join or an encoding that flips the classes). The training's gates
        see the same wrong labels, so they all pass; only live traffic shows the canary
        calling most benign tumours malignant. The columns keep the champion's feature
        names, so the signature check passes too."""
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        path = self.s.data_dir / f"{BAD_DATASET}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow([*map(str, data.feature_names), "diagnosis"])
            for row, label in zip(data.data, data.target, strict=True):
                # target 0 is malignant in the source; the buggy export calls it benign
                writer.writerow([*row.tolist(), "benign" if label == 0 else "malignant"])
        return path

    def train_bad(self) -> str:
        path = self.write_bad_dataset()
        self.say(f"    {self.rel(path)}: the data with its labels swapped (a broken export)")
        args = ("--dataset", str(path.resolve()), "--target-column", "diagnosis",
                "--candidates", "logreg", *TIE)  # fmt: skip
        return self.train_challenger("bad", args)

    # -- traffic -----------------------------------------------------------------------------

    def show_one_request(self) -> None:
        from loadtest import v2

        s = self.s
        rows = v2.load_rows("breast_cancer")[:1]
        body = v2.infer_body(rows)
        url = f"{s.predictor_url}/v2/models/{s.model_name}/infer"
        self.say(f"    curl -s -H 'Content-Type: application/json' {url} \\")
        self.say(f"      -d '{json.dumps(body, separators=(',', ':'))}'")
        try:
            response = requests.post(url, json=body, timeout=30)
        except requests.RequestException as e:
            raise DemoError(f"the predictor did not answer: {e}") from e
        if response.status_code != 200:
            raise DemoError(f"the predictor answered {response.status_code}: {response.text}")
        self.say("    response:")
        for line in json.dumps(response.json(), indent=2).splitlines():
            self.say(f"      {line}")
        self.say("    (row 0 of the Wisconsin set; its diagnosis in the data: malignant)")

    def locust_command(self, label: str, seconds: int) -> list[str]:
        s = self.s
        folder = s.loadtest_dir / label
        folder.mkdir(parents=True, exist_ok=True)
        return [
            s.python, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
            "-u", str(s.users), "-r", str(s.users), "-t", f"{seconds}s",
            "--host", s.predictor_url, "--model-name", s.model_name,
            "--csv", str(folder / "locust"), "--html", str(folder / "report.html"),
            "--summary-json", str(folder / "summary.json"),
        ]  # fmt: skip

    def load_test(self, label: str, seconds: int) -> dict[str, Any]:
        command = self.locust_command(label, seconds)
        self.say(f"    python -m locust {' '.join(command[3:])}")
        log = self.s.log_dir / f"loadtest-{label}.log"
        with log.open("w") as err:
            result = subprocess.run(
                command,
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                timeout=seconds + 180,
                check=False,
            )
        return self.load_summary(label, result.returncode, result.stdout, log)

    def load_summary(self, label: str, code: int, stdout: str, log: Path) -> dict[str, Any]:
        folder = self.s.loadtest_dir / label
        summary_path = folder / "summary.json"
        if code not in (0, 1) or not summary_path.exists():
            raise DemoError(f"locust exited {code}; the end of {self.rel(log)}:\n{log_tail(log)}")
        for line in stdout.rstrip().splitlines():
            self.say(f"    {line}")
        self.say(f"    report: {self.rel(folder / 'report.html')} (CSV: {self.rel(folder)}/)")
        summary: dict[str, Any] = json.loads(summary_path.read_text())
        return summary

    # -- rollouts ----------------------------------------------------------------------------

    def outcome(self, version: str) -> str | None:
        """What the rollout made of `version`, from its registry tag (None: not yet)."""
        tags = registry.version_tags(self.s.mlflow_url, self.s.model_name, version)
        return ENDED.get(tags.get(registry_tags.ROLLOUT_STATUS, ""))

    def finished_rollout(self, label: str) -> tuple[str, str] | None:
        """A rollout of this kind that an earlier `make demo` finished: (version, outcome).
        The bad version is the one trained on the mislabelled export (its `dataset` tag)."""
        s = self.s
        for version in reversed(registry.latest_versions(s.mlflow_url, s.model_name)):
            tags = registry.version_tags(s.mlflow_url, s.model_name, version)
            outcome = ENDED.get(tags.get(registry_tags.ROLLOUT_STATUS, ""))
            bad = tags.get(registry_tags.DATASET) == BAD_DATASET
            if outcome is not None and bad == (label == "bad"):
                return version, outcome
        return None

    def rollout(self, label: str, train: Callable[[], str], stable: str) -> tuple[str, str]:
        """Train a challenger and let the controller take it through the schedule, with
        locust sending traffic to the InferenceService's URL until it ends."""
        done = self.finished_rollout(label)
        if done is not None:
            self.say(f"    already done: version {done[0]} was {done[1]} (no training)")
            return done
        log = self.s.log_dir / "rollout-controller.log"
        marks = (log.stat().st_size if log.exists() else 0, len(self.cluster.events()))
        version = train()
        self.say(f"    the controller sees @{CHALLENGER} move to version {version} and "
                 f"starts a canary against version {stable}")  # fmt: skip
        folder = self.s.loadtest_dir / label
        command = self.locust_command(label, ROLLOUT_TIMEOUT)
        self.say(f"    traffic until the rollout ends: python -m locust {' '.join(command[3:])}")
        locust_log = self.s.log_dir / f"loadtest-{label}.log"
        with locust_log.open("w") as err:
            locust = subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=err, text=True
            )
        try:
            outcome = self.wait_for_outcome(version, *marks)
        finally:
            locust.send_signal(signal.SIGTERM)  # locust stops and writes its reports
            try:
                stdout, _ = locust.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                locust.kill()
                stdout, _ = locust.communicate()
        self.say(f"    version {version}: {outcome.upper()} by the rollout controller")
        self.say(f"    the traffic meanwhile ({self.rel(folder)}/):")
        code = locust.returncode if locust.returncode in (0, 1) else 0
        self.load_summary(label, code, stdout, locust_log)
        return version, outcome

    def wait_for_outcome(self, version: str, log_seen: int, events_seen: int) -> str:
        """Until the registry says promoted or rolled back; shows the controller's verdict
        tables (its log) and decisions (Events in the local cluster) since the marks."""
        log = self.s.log_dir / "rollout-controller.log"
        deadline = time.monotonic() + ROLLOUT_TIMEOUT
        outcome: str | None = None
        ended_at = 0.0
        while time.monotonic() < deadline:
            self.supervisor_check("rollout-controller")
            log_seen = self.show_new_lines(log, log_seen)
            events = self.cluster.events()
            for event in events[events_seen:]:
                self.say(f"    event {event.get('reason')}: {event.get('message')}")
            ended = any(e.get("reason") in END_EVENTS for e in events[events_seen:])
            events_seen = len(events)
            if outcome is None:
                outcome = self.outcome(version)
                ended_at = time.monotonic()
            # The registry tag comes first, the Event right after it: show both.
            if outcome is not None and (ended or time.monotonic() - ended_at > 10):
                self.show_new_lines(log, log_seen)
                return outcome
            time.sleep(1)
        raise DemoError(
            f"the rollout of version {version} did not end within {ROLLOUT_TIMEOUT}s; see "
            f"{self.rel(log)} and `python -m rollout status --target local`"
        )

    def show_new_lines(self, log: Path, seen: int) -> int:
        """Print what the controller logged since `seen` bytes; the new offset. Each
        analysis that decides (PASS, FAIL) shows its whole verdict table; one that waits
        for more traffic (INCONCLUSIVE) shows as the controller's one-line log."""
        try:
            with log.open("rb") as f:
                f.seek(seen)
                chunk = f.read()
        except OSError:
            return seen
        # Up to the end of the last complete block: a table is printed whole or not yet.
        text = chunk.decode(errors="replace")
        end = text.rfind("\n") + 1
        lines = text[:end].splitlines()
        table: list[str] = []
        for line in lines:
            if line.startswith("canary analysis of ") or table:
                table.append(line)
                if line.startswith("verdict: "):
                    if not line.startswith("verdict: INCONCLUSIVE"):
                        for row in table:
                            self.say(f"    | {row}")
                    table = []
                continue
            match = LOG_PREFIX.match(line)
            if match is None or match.group(1) == "DEBUG" or " PATCH " in line:
                continue
            message = line[match.end() :]
            if message.startswith("InferenceService ") and "): " in message:
                message = message.split("): ", 1)[1]  # which one and where: said above
            self.say(f"    > {message[:200]}{'...' if len(message) > 200 else ''}")
        if table:  # an unfinished table: read it again next time
            end -= sum(len(row) + 1 for row in table)
        return seen + len(text[:end].encode())

    def show_registry(self) -> None:
        s = self.s
        champion = registry.alias_version(s.mlflow_url, s.model_name, CHAMPION)
        challenger = registry.alias_version(s.mlflow_url, s.model_name, CHALLENGER)
        for version in registry.latest_versions(s.mlflow_url, s.model_name):
            tags = registry.version_tags(s.mlflow_url, s.model_name, version)
            aliases = [f"@{a}" for a, v in ((CHAMPION, champion), (CHALLENGER, challenger))
                       if v == version]  # fmt: skip
            gates = tags.get(registry_tags.GATE_STATUS, registry_tags.GATE_PENDING)
            rollout = tags.get(registry_tags.ROLLOUT_STATUS, "-")
            reason = tags.get(registry_tags.ROLLOUT_REASON, "")
            self.say(f"    version {version:>3} {' '.join(aliases):<22} gates: {gates:<9} "
                     f"rollout: {rollout}" + (f" ({reason[:80]})" if reason else ""))  # fmt: skip
        status = subprocess.run(
            [s.python, "-m", "rollout", "status", "--target", "local",
             "--local-dir", str(s.cluster_dir.resolve()), "--isvc", s.model_name,
             "--model-name", s.model_name, "--tracking-uri", s.mlflow_url],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        self.say("    python -m rollout status --target local:")
        for line in (status.stdout + status.stderr).rstrip().splitlines():
            if not line.startswith("{"):  # the JSON line is for scripts
                self.say(f"      {line}")

    # -- the end -----------------------------------------------------------------------------

    def where(self, first: str, good: tuple[str, str], bad: tuple[str, str]) -> None:
        s = self.s
        suffix = "" if s.state_dir == Path(".demo") else f" DEMO_DIR={s.state_dir}"
        prometheus = (
            f"{s.prometheus_url}/graph  (try: sum by ({metric_names.MODEL_VERSION}) "
            f"(rate({metric_names.REQUESTS}[1m])))"
            if self.prometheus_bin
            else "not installed (apt-get install prometheus)"
        )
        reports = s.loadtest_dir
        self.say(f"\n==> The demo is running; its state is in {self.rel(s.state_dir)}/")
        rows = [
            ("MLflow UI", f"{s.mlflow_url}  (model {s.model_name}: version {good[0]} "
             f"{good[1]} over version {first}, version {bad[0]} {bad[1]})"),
            ("InferenceService", f"{s.predictor_url}/v2/models/{s.model_name}  (split by its "
             f"status; gRPC 127.0.0.1:{s.predictor_grpc_port}, per connection)"),
            ("its object", f"{self.rel(s.cluster_dir / INFERENCE_SERVICES)}/{s.model_name}.json"
             f"  (revisions, leases, events.jsonl beside it)"),
            ("revision slots", "  ".join(f"{url}/metrics" for url in s.slot_urls)),
            ("rollout controller", f"http://127.0.0.1:{s.controller_port}/metrics  (log "
             f"{self.rel(s.log_dir / 'rollout-controller.log')})"),
            ("Prometheus", prometheus),
            ("prediction log", f"{s.predictionlog_url}/predictions?limit=5"
             if prediction_log.missing() is None else "skipped (initdb not installed)"),
            ("load-test reports", "  ".join(
                self.rel(reports / label / "report.html") for label in ("stable", "good", "bad")
            )),
            ("logs, PID records", f"{self.rel(s.log_dir)}/  {self.rel(s.run_dir)}/"),
        ]  # fmt: skip
        for name, value in rows:
            self.say(f"  {name:<18} {value}")
        target = f"--target local --local-dir {self.rel(s.cluster_dir)}"
        self.say("Next: the same verbs by hand (a new @challenger is rolled out on its own;")
        self.say("      stop the controller first to drive one yourself):")
        self.say(f"  python -m rollout status {target}")
        self.say(f"  python -m rollout start {target} --version N --percent 10")
        self.say(f"  python -m rollout promote {target}    (or: rollback {target})")
        self.say(f"  make rollout-status TARGET=local{suffix}")
        self.say(f"  curl -s {s.predictor_url}/v2/models/{s.model_name}")
        self.say(f"Stop: make demo-down{suffix}   (data stays; add CLEAN=1 to delete "
                 f"{self.rel(s.state_dir)}/ too)")  # fmt: skip

    def down(self, clean: bool) -> int:
        s = self.s
        records = sorted(self.supervisor.records(), key=lambda r: r.started_at, reverse=True)
        for record in records:
            stopped = self.supervisor.stop(record.name)
            state = "stopped" if stopped else "was not running"
            self.say(f"{record.name} (pid {record.pid}): {state}")
        if not records:
            self.say(f"nothing to stop: no PID records in {self.rel(s.run_dir)}/")
        if not clean:
            if s.state_dir.exists():
                self.say(f"data kept in {self.rel(s.state_dir)}/ (CLEAN=1 deletes it)")
            return 0
        if not s.state_dir.exists():
            return 0
        strangers = sorted(p.name for p in s.state_dir.iterdir() if p.name not in STATE_ENTRIES)
        if strangers:
            raise DemoError(
                f"{s.state_dir} holds {strangers}, which the demo did not make: "
                "not deleting it (a mistyped DEMO_DIR?)"
            )
        shutil.rmtree(s.state_dir)
        prediction_log.remove_cluster(s)
        self.say(f"deleted {self.rel(s.state_dir)}/")
        return 0
