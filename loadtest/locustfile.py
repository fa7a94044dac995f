"""Locust load test of the V2 predictor: any host that speaks V2 REST.

    python -m locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8080 \
        -u 10 -r 10 -t 30s --csv out/locust --html out/report.html

A local predictor, a port-forward, or the kind ingress (`--host-header NAME.default.example.com`:
Knative routes by Host). Three tasks, weighted 6:3:1: one-row infer, batch infer
(`--batch-size` rows drawn from the real dataset), and model metadata. Every answer is
checked against the contract (`loadtest/v2.py`); one that breaks it is a failure.
`-t` bounds a run in time, `--max-requests` in count; each user waits a random
0..`--max-wait-ms` between requests.

Answers are counted per `model_version`, so a run against a canary shows the split it
observed, and each infer request is named after the version that answered it
(`infer 1 row @v2`): locust's tables, CSV and HTML report give stable and canary rows of
their own. Failed requests keep the plain name (no valid answer names a version). Against
two local predictors, `--canary-host URL --canary-weight 10` sends
about 10 % of the requests to the second one (the client splits, as Knative would);
against an InferenceService with a canary, leave it out: the server splits.

At the end the SLOs (`--slo-max-failure-ratio`, `--slo-p99-ms`) set the exit code:
0 when all hold, 1 when one does not, so a load test can gate a rollout. The summary
goes to stdout and, with `--summary-json PATH`, to a JSON file.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import numpy as np
import numpy.typing as npt
from locust import FastHttpUser, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtest import slo, v2

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "breast-cancer"


class LoadState:
    """What this locust process shares between its users: the rows to send, and the
    answers seen per model version (workers report theirs to the master)."""

    def __init__(self) -> None:
        self.rows: npt.NDArray[np.float64] | None = None
        self.versions: Counter[str] = Counter()
        self.limits = slo.SloLimits()
        self.summary_text = ""
        self.sent = 0
        self.stopping = False


STATE = LoadState()


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("V2 predictor (loadtest/locustfile.py)")
    group.add_argument(
        "--model-name", default=DEFAULT_MODEL_NAME, help="served V2 model name (/v2/models/NAME)"
    )
    group.add_argument(
        "--dataset",
        default="breast_cancer",
        help="rows to send: breast_cancer, iris or a CSV path, as the training takes",
    )
    group.add_argument("--batch-size", type=int, default=16, help="rows per batch request")
    group.add_argument(
        "--host-header", default="", help="Host header of every request (Knative routes by it)"
    )
    group.add_argument(
        "--canary-host", default="", help="base URL of a second predictor (a local canary)"
    )
    group.add_argument(
        "--canary-weight",
        type=float,
        default=0.0,
        help="percent of requests sent to --canary-host (0-100)",
    )
    group.add_argument(
        "--max-wait-ms",
        type=float,
        default=50.0,
        help="each user waits a random 0..this between requests (0: no wait)",
    )
    group.add_argument(
        "--slo-max-failure-ratio",
        type=float,
        default=slo.SloLimits.max_failure_ratio,
        help="SLO: largest failed/all requests ratio that passes",
    )
    group.add_argument(
        "--slo-p99-ms",
        type=float,
        default=slo.SloLimits.p99_ms,
        help="SLO: largest p99 response time in ms that passes",
    )
    group.add_argument(
        "--max-requests",
        type=int,
        default=0,
        help="end the run after this many requests (per locust process; 0: only -t ends it)",
    )
    group.add_argument("--summary-json", default="", help="also write the summary to this file")


def settings_problems(options: Any) -> list[str]:
    problems = []
    if options.batch_size < 1:
        problems.append(f"--batch-size must be at least 1, got {options.batch_size}")
    if not 0 <= options.canary_weight <= 100:
        problems.append(f"--canary-weight must be within 0..100, got {options.canary_weight}")
    if options.canary_weight > 0 and not options.canary_host:
        problems.append("--canary-weight needs --canary-host")
    if options.max_requests < 0:
        problems.append(f"--max-requests must be >= 0, got {options.max_requests}")
    if options.max_wait_ms < 0:
        problems.append(f"--max-wait-ms must be >= 0, got {options.max_wait_ms}")
    return problems


def on_init(environment: Environment, **_kwargs: Any) -> None:
    options = environment.parsed_options
    if options is None:  # a library user built the Environment: keep the defaults
        return
    problems = settings_problems(options)
    try:
        STATE.limits = slo.SloLimits(options.slo_max_failure_ratio, options.slo_p99_ms)
    except ValueError as e:
        problems.append(str(e))
    if problems:
        logger.error("loadtest: %s", "; ".join(problems))
        raise SystemExit(2)  # a usage error, as argparse exits on one
    if not isinstance(environment.runner, MasterRunner):
        STATE.rows = v2.load_rows(options.dataset)
        # Loading blocks for a second or more (scikit-learn's import). gevent caches the
        # loop's clock, and locust arms its --run-time timer from that stale clock right
        # after init: without a refresh a 5 s run would end almost at once.
        gevent.get_hub().loop.update_now()


class V2User(FastHttpUser):
    """One client: infers one row, a batch, or reads the metadata, and checks each answer."""

    # Low overhead per request, so the load generator is not what limits a 2-core box.
    def wait_time(self) -> float:
        return random.uniform(0, self.options.max_wait_ms / 1000)

    def on_start(self) -> None:
        self.options = self.environment.parsed_options
        self.model_path = f"/v2/models/{self.options.model_name}"
        self.headers = {"Host": self.options.host_header} if self.options.host_header else {}
        self.class_names: tuple[str, ...] | None = None
        info = self.read_metadata()
        if info is not None:
            self.class_names = info.class_names

    def count_request(self) -> None:
        """Ends the whole run, as -t does, once --max-requests have been sent."""
        STATE.sent += 1
        limit = self.options.max_requests
        if limit and STATE.sent >= limit and not STATE.stopping:
            STATE.stopping = True
            gevent.spawn(self.environment.runner.quit)  # not from inside this user's greenlet

    def base_url(self) -> str:
        """The canary's base URL for --canary-weight % of the requests, else "" (--host)."""
        if self.options.canary_weight and random.uniform(0, 100) < self.options.canary_weight:
            return str(self.options.canary_host).rstrip("/")
        return ""

    @task(6)
    def infer_one_row(self) -> None:
        self.infer(1, flat=False, name="infer 1 row")

    @task(3)
    def infer_batch(self) -> None:
        self.infer(self.options.batch_size, flat=True, name=f"infer {self.options.batch_size} rows")

    @task(1)
    def metadata(self) -> None:
        self.read_metadata()

    def infer(self, rows: int, *, flat: bool, name: str) -> None:
        assert STATE.rows is not None, "the rows are loaded at init"
        picked = STATE.rows[np.random.randint(0, len(STATE.rows), size=rows)]
        url = f"{self.base_url()}{self.model_path}/infer"
        self.count_request()
        with self.client.post(
            url,
            json=v2.infer_body(picked, flat=flat),
            headers=self.headers,
            name=name,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                return
            try:
                version = v2.check_infer_response(
                    response.json(),
                    model_name=self.options.model_name,
                    rows=rows,
                    class_names=self.class_names,
                )
            except (ValueError, v2.BadResponse) as e:
                response.failure(f"bad answer: {e}")
                return
            STATE.versions[version] += 1
            # One row per answering version in locust's tables, CSV and HTML report, so
            # stable and canary compare side by side ("infer 1 row @v2").
            response.request_meta["name"] = f"{name} @v{version}"

    def read_metadata(self) -> v2.ModelInfo | None:
        url = f"{self.base_url()}{self.model_path}"
        self.count_request()
        with self.client.get(
            url, headers=self.headers, name="metadata", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                return None
            try:
                return v2.check_metadata(response.json(), model_name=self.options.model_name)
            except (ValueError, v2.BadResponse) as e:
                response.failure(f"bad metadata: {e}")
                return None


def report_versions(data: dict[str, Any], **_kwargs: Any) -> None:
    data["model_versions"] = dict(STATE.versions)
    STATE.versions.clear()


def merge_versions(data: dict[str, Any], **_kwargs: Any) -> None:
    STATE.versions.update(data.get("model_versions", {}))


def judge(environment: Environment, **_kwargs: Any) -> None:
    """The SLO verdict sets the process exit code (locust exits with it)."""
    if isinstance(environment.runner, WorkerRunner):
        return
    total = environment.stats.total
    p99 = float(total.get_response_time_percentile(0.99)) if total.num_requests else None
    summary = slo.evaluate(
        total.num_requests,
        total.num_failures,
        p99,
        dict(STATE.versions),
        STATE.limits,
        rps=total.total_rps if total.num_requests else None,
        median_ms=float(total.median_response_time) if total.num_requests else None,
    )
    environment.process_exit_code = summary.exit_code
    STATE.summary_text = slo.format_summary(summary)
    options = environment.parsed_options
    if options is not None and options.summary_json:
        path = Path(options.summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")


def print_summary(**_kwargs: Any) -> None:
    """After locust's own tables, so the verdict is the last thing on the screen."""
    if STATE.summary_text:
        print(STATE.summary_text, flush=True)


# Locust collects the listeners as it imports the locustfile (its EventHook is untyped).
LISTENERS: tuple[tuple[Any, Callable[..., None]], ...] = (
    (events.init_command_line_parser, add_arguments),
    (events.init, on_init),
    (events.report_to_master, report_versions),
    (events.worker_report, merge_versions),
    (events.quitting, judge),
    (events.quit, print_summary),
)
for hook, listener in LISTENERS:
    hook.add_listener(listener)
