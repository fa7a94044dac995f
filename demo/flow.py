"""`make demo`: train → register → serve → load test → canary → analysis, on one machine.

Every service is a plain local process on 127.0.0.1, tracked by a PID record under the
state folder (`processes.py`). Running it again reuses what still runs with the same
settings, and skips a training whose result the registry already holds, so a second
`make demo` only repeats the load tests and the analysis.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import requests

from contract import metric_names, uris
from contract.uris import CHALLENGER, CHAMPION
from demo import registry, services
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
STEPS = 9
# The canary's training: another model family and seed. `--max-regression 1` lets it pass
# the no-regression gate whatever the champion scored, so the demo always has a canary;
# the output says what that gate found.
CANARY_TRAINING = ("--seed", "7", "--candidates", "random_forest", "--max-regression", "1")
FIRST_TRAINING = ("--candidates", "logreg")
TRAINING_TIMEOUT = 900
READY_TIMEOUT = 240
ROLLOUT_VERDICTS = {
    0: ("PASS", "the canary is as good as stable: a rollout would promote it"),
    1: ("FAIL", "the canary is worse than stable: a rollout would roll it back"),
    3: ("INCONCLUSIVE", "too little evidence in the window: a rollout would wait and ask again"),
}


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

        self.step(3, f"Predictor on {uris.alias_uri(s.model_name, CHAMPION)} (version {champion})")
        self.ensure(self.predictor_service(), "predictor", READY_TIMEOUT)

        self.step(4, "One V2 request")
        self.show_one_request()

        self.step(5, f"Load test: {s.users} users for {s.load_seconds}s against the predictor")
        self.load_test("stable", s.load_seconds, canary=False)

        self.step(6, "Prometheus")
        self.start_prometheus()

        self.step(7, "Second training with other settings: the canary's version")
        challenger = self.train_challenger(champion)

        self.step(8, f"Canary predictor on {uris.version_uri(s.model_name, challenger)}")
        self.ensure(self.canary_service(challenger), "canary predictor", READY_TIMEOUT)

        self.step(
            9,
            f"Canary: {100 - s.canary_weight}/{s.canary_weight} split for {s.canary_seconds}s, "
            "then the rollout analysis",
        )
        started = time.time()
        self.load_test("canary", s.canary_seconds, canary=True)
        self.analyze(champion, challenger, started)

        self.where(champion, challenger)
        return 0

    def check_ports(self) -> None:
        s = self.s
        services = [
            ("mlflow", [s.mlflow_port]),
            ("predictor", [s.predictor_port, s.predictor_grpc_port]),
            ("canary", [s.canary_port, s.canary_grpc_port]),
        ]
        if self.prometheus_bin:
            services.append(("prometheus", [s.prometheus_port]))
        problems = self.supervisor.busy_ports(services)
        if problems:
            raise PortBusy(
                "; ".join(problems) + " by a process this demo did not start. Stop it, or "
                "choose other ports: make demo MLFLOW_PORT=... PREDICTOR_PORT=... "
                "PREDICTOR_GRPC_PORT=... CANARY_PORT=... CANARY_GRPC_PORT=... PROMETHEUS_PORT=..."
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

    def _predictor(self, name: str, uri: str, port: int, grpc_port: int) -> Service:
        s = self.s
        argv = (
            s.python, "-m", "serving", "--model_uri", uri, "--host", "127.0.0.1",
            "--http_port", str(port), "--grpc_port", str(grpc_port),
        )  # fmt: skip
        return Service(
            name=name,
            argv=argv,
            ports=(port, grpc_port),
            ready_url=f"http://127.0.0.1:{port}/v2/health/ready",
            env={
                "MLFLOW_TRACKING_URI": s.mlflow_url,
                "MODEL_NAME": s.model_name,
                "LOAD_RETRY_MAX_SECONDS": "2",
            },
        )

    def predictor_service(self) -> Service:
        s = self.s
        uri = uris.alias_uri(s.model_name, CHAMPION)
        return self._predictor("predictor", uri, s.predictor_port, s.predictor_grpc_port)

    def canary_service(self, version: str) -> Service:
        s = self.s
        uri = uris.version_uri(s.model_name, version)
        return self._predictor("canary", uri, s.canary_port, s.canary_grpc_port)

    def prometheus_config(self, rules: Path) -> str:
        s = self.s
        targets = "".join(
            f'      - targets: ["127.0.0.1:{port}"]\n'
            f"        labels: {{namespace: {SCRAPE_NAMESPACE}, pod: {pod}}}\n"
            for pod, port in (("predictor", s.predictor_port), ("canary", s.canary_port))
        )
        return (
            "# Written by `make demo`: both local predictors, scraped every second so a\n"
            "# short canary run already gives the analysis a window of samples, and the\n"
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
        self.say(f"    scraping {s.predictor_url}/metrics and {s.canary_url}/metrics every 1s")
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

    def train_challenger(self, champion: str) -> str:
        s = self.s
        challenger = registry.alias_version(s.mlflow_url, s.model_name, CHALLENGER)
        if challenger is not None and challenger != champion:
            self.say(f"    already registered: version {challenger} is @challenger (no training)")
            return challenger
        code, summary = self.train("2", CANARY_TRAINING)
        self.describe_run(summary)
        if code != 0:
            raise DemoError(
                f"the gates rejected version {summary.get('version')}: {summary.get('reasons')}; "
                f"see {self.rel(s.log_dir / 'train-2.log')}"
            )
        regression = next(
            (g for g in summary.get("gates", []) if g.get("name") == "no_regression_vs_champion"),
            None,
        )
        self.say(
            f"    registered version {summary['version']} and moved @challenger to it; "
            f"@champion stays on version {champion}."
        )
        if regression is not None:
            self.say(
                "    note: the demo trains it with --max-regression 1, so the no-regression gate "
                f"lets it through whatever it found ({regression.get('detail')}). A real "
                "pipeline keeps the default 0 and would have stopped a version that scores "
                "below the champion; here the canary analysis gets to judge it instead."
            )
        challenger = registry.alias_version(s.mlflow_url, s.model_name, CHALLENGER)
        if challenger is None or challenger == champion:
            raise DemoError("the second training passed but @challenger did not move")
        return challenger

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

    def load_test(self, label: str, seconds: int, *, canary: bool) -> dict[str, Any]:
        s = self.s
        folder = s.loadtest_dir / label
        folder.mkdir(parents=True, exist_ok=True)
        command = [
            s.python, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
            "-u", str(s.users), "-r", str(s.users), "-t", f"{seconds}s",
            "--host", s.predictor_url, "--model-name", s.model_name,
            "--csv", str(folder / "locust"), "--html", str(folder / "report.html"),
            "--summary-json", str(folder / "summary.json"),
        ]  # fmt: skip
        if canary:
            command += ["--canary-host", s.canary_url, "--canary-weight", str(s.canary_weight)]
        self.say(f"    python -m locust {' '.join(command[3:])}")
        log = s.log_dir / f"loadtest-{label}.log"
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
        summary_path = folder / "summary.json"
        if result.returncode not in (0, 1) or not summary_path.exists():
            raise DemoError(
                f"locust exited {result.returncode}; the end of {self.rel(log)}:\n{log_tail(log)}"
            )
        for line in result.stdout.rstrip().splitlines():
            self.say(f"    {line}")
        self.say(f"    report: {self.rel(folder / 'report.html')} (CSV: {self.rel(folder)}/)")
        summary: dict[str, Any] = json.loads(summary_path.read_text())
        return summary

    # -- analysis ----------------------------------------------------------------------------

    def wait_for_scrapes_after(self, moment: float, timeout: float = 30) -> None:
        """Until Prometheus has scraped every predictor after `moment` (the end of the load
        test), so the analysis sees the whole run."""
        query = f'min(timestamp(up{{job="{SCRAPE_JOB}"}}))'
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = requests.get(
                    f"{self.s.prometheus_url}/api/v1/query", params={"query": query}, timeout=5
                ).json()["data"]["result"]
                if result and float(result[0]["value"][1]) > moment:
                    return
            except (requests.RequestException, ValueError, KeyError, IndexError):
                pass
            time.sleep(0.5)
        raise DemoError(f"Prometheus did not scrape the predictors within {timeout:.0f}s")

    def analyze(self, stable: str, canary: str, started: float) -> None:
        s = self.s
        if not self.prometheus_bin:
            self.say("    no Prometheus: skipping `python -m rollout analyze`")
            return
        self.wait_for_scrapes_after(time.time())
        # The window covers the canary load test and a little before it.
        window = f"{int(time.time() - started) + 5}s"
        command = [
            s.python, "-m", "rollout", "analyze",
            "--model-name", s.model_name, "--tracking-uri", s.mlflow_url,
            "--prometheus-url", s.prometheus_url,
            "--stable", stable, "--canary", canary,
            "--window", window, "--min-requests", str(s.min_requests),
        ]  # fmt: skip
        self.say(f"    python -m rollout {' '.join(command[3:])}")
        result = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        log = s.log_dir / "analysis.log"
        log.write_text(result.stdout + result.stderr)
        # The table is for people; its last line, one JSON object, is for scripts: in the log.
        for line in result.stdout.rstrip().splitlines():
            if not line.startswith("{"):
                self.say(f"    {line}")
        self.say(f"    (the JSON verdict: {self.rel(log)})")
        if result.returncode not in ROLLOUT_VERDICTS:
            raise DemoError(
                f"the rollout analysis exited {result.returncode}:\n{result.stderr[-2000:]}"
            )
        verdict, meaning = ROLLOUT_VERDICTS[result.returncode]
        self.say(f"canary verdict: {verdict} (exit {result.returncode}): {meaning}.")
        self.say(
            "    (locally nothing moves; on the kind cluster `make rollout` acts on the verdict)"
        )

    # -- the end -----------------------------------------------------------------------------

    def where(self, champion: str, challenger: str) -> None:
        s = self.s
        stop = "make demo-down" + (
            "" if s.state_dir == Path(".demo") else f" DEMO_DIR={s.state_dir}"
        )
        prometheus = (
            f"{s.prometheus_url}/graph  (try: sum by ({metric_names.MODEL_VERSION}) "
            f"(rate({metric_names.REQUESTS}[1m])))"
            if self.prometheus_bin
            else "not installed (apt-get install prometheus), so no canary analysis"
        )
        reports = s.loadtest_dir
        self.say(f"\n==> The demo is running; its state is in {self.rel(s.state_dir)}/")
        rows = [
            ("MLflow UI", f"{s.mlflow_url}  (model {s.model_name}: version {champion} "
             f"@champion, version {challenger} @challenger)"),
            ("predictor", f"{s.predictor_url}/v2/models/{s.model_name}  (version {champion}; "
             f"gRPC 127.0.0.1:{s.predictor_grpc_port})"),
            ("canary predictor", f"{s.canary_url}/v2/models/{s.model_name}  (version "
             f"{challenger}; gRPC 127.0.0.1:{s.canary_grpc_port})"),
            ("metrics", f"{s.predictor_url}/metrics  {s.canary_url}/metrics"),
            ("Prometheus", prometheus),
            ("load-test reports", f"{self.rel(reports / 'stable' / 'report.html')}  "
             f"{self.rel(reports / 'canary' / 'report.html')}"),
            ("logs, PID records", f"{self.rel(s.log_dir)}/  {self.rel(s.run_dir)}/"),
        ]  # fmt: skip
        for name, value in rows:
            self.say(f"  {name:<18} {value}")
        self.say("Next:")
        self.say(f"  curl -s {s.predictor_url}/v2/models/{s.model_name}")
        self.say(f"  make loadtest HOST={s.predictor_url} USERS=10 DURATION=30s")
        self.say(f"Stop: {stop}   (data stays; add CLEAN=1 to delete {self.rel(s.state_dir)}/ too)")

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
        self.say(f"deleted {self.rel(s.state_dir)}/")
        return 0
