"""V2 REST throughput and latency of the predictor, against a minimal `kserve.Model` and
a bare starlette endpoint serving the same model, plus start → ready time, resident
memory, and what the per-request metrics, the feature-drift counting and the optional
access log cost.

The servers run pinned to one core and `wrk` drives them from the other. The machine
may be shared, so the servers take turns: each (concurrency, batch) cell runs every
server for a few seconds, several rounds in rotating order, and reports each server's
median round. Three models, each registered by the training package (`--smoke`) in a
local `mlflow server`: the logistic-regression pipeline, a 50-tree random forest and a
50-iteration histogram gradient boosting. The predictor serves each with its ONNX copy
(ONNX Runtime, `MODEL_RUNTIME=auto`) and, in the same rotation, with scikit-learn
(`predictor+sklearn`, `MODEL_RUNTIME=sklearn`).

Environment: BENCH_DURATION (seconds per round, default 3), BENCH_ROUNDS (default 3),
BENCH_CONCURRENCY (default 1,8,32), BENCH_BATCHES (default 1,32), BENCH_STARTS (start →
ready samples per placement, default 5), BENCH_DRIFT_ROUNDS (rounds of the feature drift
on/off comparison, default 9).

Targets (issue 3; logistic regression, batch 1, concurrency 8): ≥ 1.5x the minimal
kserve.Model's throughput, ≥ 70 % of the starlette endpoint's, p99 < 15 ms; start →
ready < 3 s; resident memory < 250 MB after warm-up. Issue 15 (batch 1, concurrency 8):
the forest and the boosting served with ONNX Runtime within 20 % of the logistic
regression's throughput, p99 < 15 ms; the logistic regression no worse than with
scikit-learn. Issue 18: counting served rows into the drift profile's bins costs at most
5 % of the logistic regression's batch-1 throughput at concurrency 8 (on against
`predictor-drift`, the same predictor with FEATURE_DRIFT=false, taking turns).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from contract.uris import version_uri
from demo.services import (
    PYTHON,
    REPO_ROOT,
    Process,
    free_port,
    http_ok,
    last_json,
    running_mlflow,
    start_process,
)

SERVED = "breast-cancer"
MODELS = (
    ("logreg", "logreg"),
    ("forest", "random_forest"),
    ("boosting", "hist_gradient_boosting"),
)
PREDICTOR, KSERVE, STARLETTE, LOGGED = "predictor", "kserve", "starlette", "predictor+log"
SKLEARN_RUNTIME = "predictor+sklearn"
"""The predictor forced to serve with scikit-learn (`MODEL_RUNTIME=sklearn`)."""
NO_DRIFT = "predictor-drift"
"""The predictor with its feature-drift counting off (`FEATURE_DRIFT=false`)."""
IMPORTS = "imports"
SERVERS = (PREDICTOR, KSERVE, STARLETTE, SKLEARN_RUNTIME)
# Native thread pools sized to the host only contend on a pinned core: one thread, for all.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass(frozen=True)
class Row:
    model: str
    server: str
    concurrency: int
    batch: int
    sample: Sample
    """The median round by throughput (its latencies too)."""
    errors: int
    """Errors of all rounds."""


@dataclass(frozen=True)
class Cores:
    server: list[str]
    client: list[str]

    @classmethod
    def detect(cls) -> Cores:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            print("WARNING: one core only: server and load generator share it")
            return cls([], [])
        return cls(["taskset", "-c", str(cores[0])], ["taskset", "-c", str(cores[1])])


def env_list(name: str, default: str) -> list[int]:
    return [int(v) for v in os.environ.get(name, default).split(",") if v.strip()]


# --- wrk ---------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _milliseconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"not a wrk latency: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> Sample:
    """Requests/s, p50 and p99 (ms) and errors (non-2xx and socket) of `wrk --latency`."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, flags=re.MULTILINE))
    if rps is None or set(percentiles) != {"50", "99"}:
        raise ValueError(f"unexpected wrk output:\n{output}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket:
        errors += sum(int(n) for n in socket.groups())
    return Sample(
        float(rps.group(1)),
        _milliseconds(percentiles["50"]),
        _milliseconds(percentiles["99"]),
        errors,
    )


def write_lua(folder: Path, body: bytes) -> Path:
    script = folder / f"post-{len(body)}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
    )
    return script


def wrk_output(cores: Cores, url: str, script: Path, concurrency: int, seconds: float) -> str:
    """What one wrk run (one thread, on the client's core) prints."""
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency", "-s", str(script)]
    done = subprocess.run(
        [*cores.client, *command, url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    return done.stdout


def run_wrk(cores: Cores, url: str, script: Path, concurrency: int, seconds: float) -> Sample:
    return parse_wrk(wrk_output(cores, url, script, concurrency, seconds))


# --- servers -----------------------------------------------------------------------------


@dataclass
class Server:
    kind: str
    process: Process
    url: str
    ready_seconds: float

    @property
    def infer(self) -> str:
        return f"{self.url}/v2/models/{SERVED}/infer"


def wait_ready(url: str, process: Process, timeout: float = 180) -> float:
    """Seconds until `url` answers 200, polled every 10 ms."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not process.alive():
            raise RuntimeError(f"server exited:\n{process.log()[-3000:]}")
        if http_ok(url):  # the standard library's: cheap beside the server being timed
            return time.monotonic() - started
        time.sleep(0.01)
    raise TimeoutError(f"{url} not ready after {timeout}s:\n{process.log()[-3000:]}")


def start_server(
    kind: str, model: dict[str, Any], tracking_uri: str, pin: list[str], folder: Path
) -> Server:
    http_port, grpc_port = free_port(), free_port()
    env = dict(ONE_THREAD)
    if kind in (PREDICTOR, LOGGED, SKLEARN_RUNTIME, NO_DRIFT):
        args = [PYTHON, "-m", "serving", "--model_uri", model["uri"]]
        args += ["--http_port", str(http_port), "--grpc_port", str(grpc_port)]
        env |= {"MLFLOW_TRACKING_URI": tracking_uri, "MODEL_NAME": SERVED}
        env |= {"ACCESS_LOG": "true"} if kind == LOGGED else {}
        env |= {"MODEL_RUNTIME": "sklearn"} if kind == SKLEARN_RUNTIME else {}
        env |= {"FEATURE_DRIFT": "false"} if kind == NO_DRIFT else {}
    else:
        args = [PYTHON, "-m", "benchmarks.serving_baselines"]
        env |= {
            "BASELINE": kind,
            "BASELINE_MODEL_DIR": str(model["dir"]),
            "BASELINE_MODEL_NAME": SERVED,
            "BASELINE_HTTP_PORT": str(http_port),
            "BASELINE_GRPC_PORT": str(grpc_port),
        }
    log = folder / f"{kind}-{model['label']}-{http_port}.log"
    started = time.monotonic()
    process = start_process([*pin, *args], log, env)
    url = f"http://127.0.0.1:{http_port}"
    wait_ready(url + "/v2/health/ready", process)
    return Server(kind, process, url, time.monotonic() - started)


def check_answers(server: Server, body: bytes) -> None:
    response = requests.post(
        server.infer, data=body, headers={"content-type": "application/json"}, timeout=10
    )
    if response.status_code != 200:
        raise RuntimeError(f"{server.kind} answered {response.status_code}: {response.text[:300]}")


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- setup ---------------------------------------------------------------------------------


def request_body(rows: int) -> bytes:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer().data[:rows]
    tensor = {"name": "features", "shape": [rows, 30], "datatype": "FP64", "data": data.tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def register(tracking_uri: str, label: str, family: str) -> dict[str, Any]:
    """`python -m training --smoke` registers the family under a name of its own."""
    name = f"bench-{label}"
    command = [PYTHON, "-m", "training", "--tracking-uri", tracking_uri, "--model-name", name]
    # The gates are not what is measured here: the smoke forest may miss the recall gate.
    done = subprocess.run(
        [*command, "--smoke", "--candidates", family, "--min-malignant-recall", "0"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    summary = last_json(done.stdout)
    if summary.get("status") != "registered":
        raise RuntimeError(f"training {family} did not register:\n{done.stdout}\n{done.stderr}")
    version = summary["version"]
    return {"label": label, "name": name, "version": version, "uri": version_uri(name, version)}


def download(tracking_uri: str, model: dict[str, Any], folder: Path) -> Path:
    from serving.registry import fetch, parse_model_uri

    return fetch(parse_model_uri(model["uri"]), tracking_uri, folder / model["label"], 30).path


# --- measuring -----------------------------------------------------------------------------


def measure_cell(
    servers: list[Server],
    cores: Cores,
    script: Path,
    concurrency: int,
    seconds: float,
    rounds: int,
) -> dict[str, tuple[Sample, int]]:
    """Every server, `rounds` times in rotating order; each one's median round."""
    samples: dict[str, list[Sample]] = {s.kind: [] for s in servers}
    for round_ in range(rounds):
        turn = servers[round_ % len(servers) :] + servers[: round_ % len(servers)]
        for server in turn:
            samples[server.kind].append(run_wrk(cores, server.infer, script, concurrency, seconds))
    result = {}
    for kind, taken in samples.items():
        ranked = sorted(taken, key=lambda s: s.rps)
        result[kind] = (ranked[len(ranked) // 2], sum(s.errors for s in taken))
    return result


def metrics_cost_us(repeat: int = 20000) -> float:
    """Microseconds of metric updates per request (one request, one row), in-process."""
    import numpy as np
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics import Histogram

    from contract.metric_names import REST
    from serving.metrics import PredictorMetrics

    bound = PredictorMetrics(CollectorRegistry()).bind("m", "1", ["a", "b"])
    kserve_histogram = Histogram("x_seconds", "x", registry=CollectorRegistry())
    labels = np.array([1], dtype=np.int64)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            bound.request(REST, "ok", 0.0004)
            bound.predicted(labels)
            kserve_histogram.observe(0.0003)
        best = min(best, (time.perf_counter() - started) / repeat * 1e6)
    return best


def drift_cost_us(repeat: int = 20000) -> tuple[float, float]:
    """Microseconds of feature-drift counting per one-row request, in-process, and
    milliseconds a scrape of its series takes (30 features x 10 bins, counts and shares)."""
    import numpy as np
    from prometheus_client import CollectorRegistry, generate_latest
    from sklearn.datasets import load_breast_cancer

    from contract.drift_profile import build_profile
    from serving.feature_drift import FeatureDriftCollector

    data = load_breast_cancer()
    registry = CollectorRegistry()
    profile = build_profile(data.data, [str(n) for n in data.feature_names])
    counter = FeatureDriftCollector(registry).counter("m", "1", profile)
    row = np.ascontiguousarray(data.data[:1], dtype=np.float64)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            counter.count(row)
        best = min(best, (time.perf_counter() - started) / repeat * 1e6)
    scrapes = []
    for _ in range(20):
        started = time.perf_counter()
        generate_latest(registry)
        scrapes.append(time.perf_counter() - started)
    return best, min(scrapes) * 1000


def start_times(
    model: dict[str, Any], tracking_uri: str, pin: list[str], folder: Path, count: int
) -> dict[str, list[float]]:
    """Start → ready of the predictor (model from the registry), and of the minimal
    kserve.Model and the bare starlette endpoint (model from local disk), and the
    predictor's imports alone, taking turns so all see the same machine."""
    seconds: dict[str, list[float]] = {PREDICTOR: [], KSERVE: [], STARLETTE: [], IMPORTS: []}
    for _ in range(count):
        for kind, samples in seconds.items():
            if kind == IMPORTS:
                samples.append(import_seconds(pin))
                continue
            server = start_server(kind, model, tracking_uri, pin, folder)
            server.process.stop()
            samples.append(server.ready_seconds)
    return seconds


# What the predictor imports before it listens, as it does, and nothing else: the floor
# of its start. It prints the wall-clock time its imports ended at.
IMPORTS_ONLY = (
    "import gc; gc.disable(); "
    "from serving.__main__ import prepare_process; prepare_process(); "
    "from serving.loader import preload; preload(); "
    "import serving.model, serving.server, time; print(time.time())"
)


def import_seconds(pin: list[str]) -> float:
    started = time.time()
    done = subprocess.run(
        [*pin, PYTHON, "-c", IMPORTS_ONLY],
        check=True,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **ONE_THREAD},
    )
    return float(done.stdout.split()[-1]) - started


# --- report ------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def print_runtime_targets(cell: dict[tuple[str, str, int, int], Row], logreg: Row) -> None:
    """Issue 15's targets: the trees with ONNX Runtime beside logreg, and logreg with ONNX
    Runtime beside itself with scikit-learn; batch 1, concurrency 8."""
    for label in ("forest", "boosting"):
        trees = cell.get((label, PREDICTOR, 8, 1))
        slow = cell.get((label, SKLEARN_RUNTIME, 8, 1))
        if trees is None:
            continue
        share, p99 = trees.sample.rps / logreg.sample.rps, trees.sample.p99_ms
        before = f"; with scikit-learn {slow.sample.rps:.0f} rps" if slow else ""
        print(
            f"- {label} with ONNX Runtime: {trees.sample.rps:.0f} rps, {share:.0%} of "
            f"logreg's (>= 80 %) {verdict(share >= 0.8)}; p99 {p99:.2f} ms (< 15 ms) "
            f"{verdict(p99 < 15)}{before}"
        )
    plain = cell.get(("logreg", SKLEARN_RUNTIME, 8, 1))
    if plain:
        ratio = logreg.sample.rps / plain.sample.rps
        print(
            f"- logreg with ONNX Runtime: {ratio:.0%} of its throughput with scikit-learn "
            f"({logreg.sample.rps:.0f} vs {plain.sample.rps:.0f} rps; no worse: >= 95 %) "
            f"{verdict(ratio >= 0.95)}"
        )


def print_report(
    rows: list[Row],
    memory: dict[str, float],
    starts: dict[str, dict[str, list[float]]],
    metrics_us: float,
    baseline_starts: dict[str, list[float]],
    drift: tuple[float, float] | None = None,
    paired: DriftCost | None = None,
) -> None:
    cell = {(r.model, r.server, r.concurrency, r.batch): r for r in rows}
    print("\nV2 REST; server pinned to one core, wrk on the other; median of the rounds")
    print(
        "| model | concurrency | batch | rps | p50 ms | p99 ms | errors | vs kserve | vs bare "
        "| vs scikit-learn runtime |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.server != PREDICTOR:
            continue
        ratios = []
        for other in (KSERVE, STARLETTE, SKLEARN_RUNTIME):
            base = cell.get((r.model, other, r.concurrency, r.batch))
            ratios.append(f"{r.sample.rps / base.sample.rps:.2f}x" if base else "-")
        print(
            f"| {r.model} | {r.concurrency} | {r.batch} | {r.sample.rps:.0f} | "
            f"{r.sample.p50_ms:.2f} | {r.sample.p99_ms:.2f} | {r.errors} | {' | '.join(ratios)} |"
        )
    print("\nThe same cells for the baselines (and the predictor with ACCESS_LOG=true)")
    print("| model | server | concurrency | batch | rps | p50 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.server != PREDICTOR:
            print(
                f"| {r.model} | {r.server} | {r.concurrency} | {r.batch} | {r.sample.rps:.0f} | "
                f"{r.sample.p50_ms:.2f} | {r.sample.p99_ms:.2f} | {r.errors} |"
            )

    print("\nTargets (logistic regression, batch 1, concurrency 8 unless said)")
    ours, kserve = cell.get(("logreg", PREDICTOR, 8, 1)), cell.get(("logreg", KSERVE, 8, 1))
    bare, logged = cell.get(("logreg", STARLETTE, 8, 1)), cell.get(("logreg", LOGGED, 8, 1))
    if ours and kserve and bare:
        k, s = ours.sample.rps / kserve.sample.rps, ours.sample.rps / bare.sample.rps
        print(f"- throughput vs the minimal kserve.Model: {k:.2f}x (>= 1.5x) {verdict(k >= 1.5)}")
        print(f"- throughput vs the starlette endpoint: {s:.0%} (>= 70 %) {verdict(s >= 0.7)}")
        p99 = ours.sample.p99_ms
        print(f"- p99 latency: {p99:.2f} ms (< 15 ms) {verdict(p99 < 15)}")
    if ours:
        print_runtime_targets(cell, ours)
    for placement, kinds in starts.items():
        start, minimal = statistics.median(kinds[PREDICTOR]), statistics.median(kinds[KSERVE])
        bare, imports = statistics.median(kinds[STARLETTE]), statistics.median(kinds[IMPORTS])
        samples = ", ".join(f"{s:.2f}" for s in kinds[PREDICTOR])
        print(
            f"- start → ready, {placement}: median {start:.2f} s ({samples}) (< 3 s) "
            f"{verdict(start < 3)}\n"
            f"  model from local disk: minimal kserve.Model median {minimal:.2f} s (ours takes "
            f"{start / minimal:.0%} of it), bare starlette median {bare:.2f} s; "
            f"the predictor's imports alone: median {imports:.2f} s"
        )
    for kind, seconds in baseline_starts.items():
        samples = ", ".join(f"{s:.2f}" for s in seconds)
        print(f"  started for the throughput runs, {kind} pinned: {samples} s")
    for label, mb in memory.items():
        print(
            f"- resident memory after the runs, {label}: {mb:.0f} MB (< 250 MB) {verdict(mb < 250)}"
        )
    if ours:
        share = metrics_us / (1e6 / ours.sample.rps)
        print(f"- metrics: {metrics_us:.1f} µs per request ({share:.1%} of a request at this rate)")
    print_drift_cost(cell, drift, paired)
    if ours and logged:
        cost = 1 - logged.sample.rps / ours.sample.rps
        rates = f"{logged.sample.rps:.0f} rps vs {ours.sample.rps:.0f} off"
        print(f"- access log on: {rates} ({cost:.0%} fewer)")


DRIFT_CELL = "drift on/off"
"""The `model` of the rows of the longer on/off comparison (logreg, batch 1, c=8)."""


def print_drift_cost(
    cell: dict[tuple[str, str, int, int], Row],
    drift: tuple[float, float] | None,
    paired: DriftCost | None = None,
) -> None:
    on, off = cell.get((DRIFT_CELL, PREDICTOR, 8, 1)), cell.get((DRIFT_CELL, NO_DRIFT, 8, 1))
    if on and off:
        cost = paired.cost if paired else 1 - on.sample.rps / off.sample.rps
        how = f"median of {len(paired.round_costs)} paired rounds" if paired else "medians"
        print(
            f"- feature drift on: {on.sample.rps:.0f} rps vs {off.sample.rps:.0f} off "
            f"({cost:.1%} fewer, {how}; budget 5 %) {verdict(cost <= 0.05)}; p99 "
            f"{on.sample.p99_ms:.2f} vs {off.sample.p99_ms:.2f} ms"
        )
    if on and off and paired:
        cpu_on = statistics.median(paired.cpu_us[PREDICTOR])
        cpu_off = statistics.median(paired.cpu_us[NO_DRIFT])
        print(
            f"  server CPU per request: {cpu_on:.0f} µs on vs {cpu_off:.0f} µs off "
            f"({paired.cpu_cost:.1%} of the rate; budget 5 %) {verdict(paired.cpu_cost <= 0.05)}"
        )
    if drift and on:
        count_us, scrape_ms = drift
        share = count_us / (1e6 / on.sample.rps)
        print(
            f"  in-process: {count_us:.2f} µs per one-row request ({share:.1%} of a request "
            f"at this rate); a scrape of its 600 series {scrape_ms:.1f} ms"
        )


@dataclass
class DriftCost:
    """The on/off comparison: each round runs both back to back (in alternating order),
    so a round's ratio sees one state of a shared machine; the medians are judged.

    Two measures: throughput (wrk's rate) and the server's CPU time per request (its user
    + system time over the round divided by the requests it answered). On a busy machine
    the rate moves with whatever else runs; the CPU time a request costs the server moves
    far less, and on the server's saturated core it is what bounds the rate."""

    round_costs: list[float]
    """1 - rate on / rate off, per round."""
    cpu_us: dict[str, list[float]]
    """Server CPU microseconds per request, per round, on (`predictor`) and off."""

    @property
    def cost(self) -> float:
        return statistics.median(self.round_costs)

    @property
    def cpu_cost(self) -> float:
        """1 - off / on CPU per request: the share of the rate counting costs."""
        on, off = self.cpu_us[PREDICTOR], self.cpu_us[NO_DRIFT]
        return statistics.median(1 - b / a for a, b in zip(on, off, strict=True))


def measure_drift(
    model: dict[str, Any], tracking_uri: str, cores: Cores, folder: Path, script: Path | None
) -> tuple[list[Row], DriftCost | None]:
    """The predictor with feature drift on and off, batch 1 at concurrency 8, paired
    round by round over more rounds than a cell (a 5 % budget needs less noise)."""
    from benchmarks.wire_formats import cpu_seconds

    if script is None:  # BENCH_BATCHES without 1
        return [], None
    rounds = int(os.environ.get("BENCH_DRIFT_ROUNDS", "9"))
    seconds = float(os.environ.get("BENCH_DURATION", "3"))
    servers = [
        start_server(k, model, tracking_uri, cores.server, folder) for k in (PREDICTOR, NO_DRIFT)
    ]
    samples: dict[str, list[Sample]] = {PREDICTOR: [], NO_DRIFT: []}
    cpu_us: dict[str, list[float]] = {PREDICTOR: [], NO_DRIFT: []}
    try:
        for server in servers:
            run_wrk(cores, server.infer, script, 8, 2)  # warm-up
        for round_ in range(rounds):
            for server in servers if round_ % 2 == 0 else servers[::-1]:
                before = cpu_seconds(server.process.popen.pid)
                sample = run_wrk(cores, server.infer, script, 8, seconds)
                used = cpu_seconds(server.process.popen.pid) - before
                samples[server.kind].append(sample)
                cpu_us[server.kind].append(used / max(1.0, sample.rps * seconds) * 1e6)
    finally:
        for server in servers:
            server.process.stop()
    rows = []
    for kind, taken in samples.items():
        ranked = sorted(taken, key=lambda s: s.rps)
        sample = ranked[len(ranked) // 2]
        rows.append(Row(DRIFT_CELL, kind, 8, 1, sample, sum(s.errors for s in taken)))
        cpu = statistics.median(cpu_us[kind])
        print(
            f"  {DRIFT_CELL} {kind:<16} {sample.rps:8.0f} rps  p99 {sample.p99_ms:6.2f} ms  "
            f"server CPU {cpu:.0f} µs per request"
        )
    paired = zip(samples[PREDICTOR], samples[NO_DRIFT], strict=True)
    cost = DriftCost([1 - on.rps / off.rps for on, off in paired], cpu_us)
    print(f"  {DRIFT_CELL} rate cost per round: {', '.join(f'{c:.1%}' for c in cost.round_costs)}")
    return rows, cost


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("the serving benchmark needs wrk (Debian package 'wrk')")
    seconds = float(os.environ.get("BENCH_DURATION", "3"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    concurrencies = env_list("BENCH_CONCURRENCY", "1,8,32")
    batches = env_list("BENCH_BATCHES", "1,32")
    start_samples = int(os.environ.get("BENCH_STARTS", "5"))
    cores = Cores.detect()
    print(f"cores: {os.cpu_count()}; load average at start: {os.getloadavg()[0]:.2f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp, running_mlflow(Path(tmp) / "mlflow") as mlflow:
        folder = Path(tmp)
        models = [register(mlflow.url, label, family) for label, family in MODELS]
        for model in models:
            model["dir"] = download(mlflow.url, model, folder / "downloads")
        bodies = {batch: request_body(batch) for batch in batches}
        scripts = {batch: write_lua(folder, body) for batch, body in bodies.items()}

        starts = {}
        for placement, pin in (("both cores", []), ("pinned to one core", cores.server)):
            starts[placement] = start_times(models[0], mlflow.url, pin, folder, start_samples)
            print(f"start → ready, {placement}:", starts[placement], flush=True)

        rows: list[Row] = []
        memory: dict[str, float] = {}
        baseline_starts: dict[str, list[float]] = {KSERVE: [], STARLETTE: []}
        for model in models:
            servers = [start_server(k, model, mlflow.url, cores.server, folder) for k in SERVERS]
            logged = start_server(LOGGED, model, mlflow.url, cores.server, folder)
            for server in (s for s in servers if s.kind in baseline_starts):
                baseline_starts[server.kind].append(server.ready_seconds)
            try:
                for batch in batches:
                    for server in [*servers, logged]:
                        check_answers(server, bodies[batch])
                        run_wrk(
                            cores, server.infer, scripts[batch], max(concurrencies), 2
                        )  # warm-up
                    for concurrency in concurrencies:
                        measured = [*servers]
                        if (model["label"], batch, concurrency) == ("logreg", 1, 8):
                            measured.append(logged)
                        cell = measure_cell(
                            measured, cores, scripts[batch], concurrency, seconds, rounds
                        )
                        for kind, (sample, errors) in cell.items():
                            rows.append(
                                Row(model["label"], kind, concurrency, batch, sample, errors)
                            )
                            print(
                                f"  {model['label']:<7} {kind:<14} c={concurrency:<3} b={batch:<3} "
                                f"{sample.rps:8.0f} rps  p50 {sample.p50_ms:6.2f} ms  "
                                f"p99 {sample.p99_ms:6.2f} ms  errors {errors}",
                                flush=True,
                            )
                memory[model["label"]] = resident_mb(servers[0].process.popen.pid)
            finally:
                for server in [*servers, logged]:
                    server.process.stop()
        drift_rows, paired = measure_drift(models[0], mlflow.url, cores, folder, scripts.get(1))
        rows += drift_rows
        print_report(
            rows, memory, starts, metrics_cost_us(), baseline_starts, drift_cost_us(), paired
        )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
