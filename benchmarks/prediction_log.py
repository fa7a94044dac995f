"""The prediction log: events/s the sink stores in PostgreSQL, and the predictor's
throughput with its own payload logger (`LOGGER_URL`) on beside off, in one run.

A throwaway PostgreSQL (initdb + pg_ctl, not pinned) and `python -m predictionlog`,
pinned to one core; `wrk` posts binary-mode CloudEvents as KServe's logger does (request
and response of each id in turn, every id new) from the other core. The events/s are wrk's answered
requests, checked against the rows in the table afterwards (every answered event stored).
Then two predictors serve the same logistic-regression version, one posting every
exchange to the sink (now unpinned), and take turns under wrk (batch 1, concurrency 8) on
the pinned core.

Environment: BENCH_DURATION (seconds per round, default 3), BENCH_ROUNDS (default 3),
BENCH_SINK_CONCURRENCY (default 8,32).

Targets (issue 18): the sink stores at least 500 events/s; the predictor's throughput with
the logger on is reported beside it off (no target: the sink's host shares the machine).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import requests

from benchmarks.serving import (
    ONE_THREAD,
    SERVED,
    Cores,
    Sample,
    env_list,
    parse_wrk,
    register,
    request_body,
    run_wrk,
    wait_ready,
    write_lua,
    wrk_output,
)
from demo.services import (
    PYTHON,
    Process,
    free_port,
    running_mlflow,
    running_postgresql,
    start_process,
)

SINK_TARGET_EVENTS_PER_SECOND = 500
EVENT_BODY = (
    '{"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP64", "data": '
    + "[" + ", ".join(["14.1"] * 30) + "]}]}"
)  # fmt: skip


def events_lua(folder: Path, run: str) -> Path:
    """A wrk script posting a request event, then the response event, of ids never seen."""
    script = folder / f"events-{run}.lua"
    script.write_text(
        f"""
local counter = 0
local request_body = {EVENT_BODY!r}
local response_body = '{{"model_name": "{SERVED}", "model_version": "{run}", "outputs": []}}'
request = function()
  counter = counter + 1
  local id = "{run}-" .. math.floor((counter + 1) / 2)
  local kind, body = "request", request_body
  if counter % 2 == 0 then kind, body = "response", response_body end
  local headers = {{
    ["Content-Type"] = "application/json",
    ["ce-specversion"] = "1.0",
    ["ce-id"] = id,
    ["ce-type"] = "org.kubeflow.serving.inference." .. kind,
    ["ce-source"] = "http://localhost:9081/",
    ["ce-inferenceservicename"] = "{SERVED}",
    ["ce-namespace"] = "bench",
    ["ce-component"] = "predictor",
    ["ce-endpoint"] = "default",
  }}
  return wrk.format("POST", "/", headers, body)
end
"""
    )
    return script


def start_sink(database_url: str, pin: list[str], folder: Path) -> tuple[Process, str]:
    port = free_port()
    process = start_process(
        [*pin, PYTHON, "-m", "predictionlog", "--host", "127.0.0.1", "--http-port", str(port)],
        folder / "sink.log",
        env={"DATABASE_URL": database_url, "RETENTION_DAYS": "0"},
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(f"{url}/readyz", process)
    return process, url


def stored_events(database_url: str, run: str) -> int:
    """Halves stored (a request and a response each count) of the ids of `run`."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(request) + count(response) FROM predictionlog.predictions "
            "WHERE id LIKE %s",
            (f"{run}-%",),
        ).fetchone()
    return int(row[0]) if row else 0


def run_wrk_counted(
    cores: Cores, url: str, script: Path, concurrency: int, seconds: float
) -> tuple[Sample, int]:
    """wrk's sample and the number of requests it completed."""
    output = wrk_output(cores, url, script, concurrency, seconds)
    total = re.search(r"(\d+) requests in", output)
    if total is None:
        raise ValueError(f"unexpected wrk output:\n{output}")
    return parse_wrk(output), int(total.group(1))


def measure_sink(
    cores: Cores,
    url: str,
    database_url: str,
    folder: Path,
    seconds: float,
    rounds: int,
    placement: str,
) -> list[tuple[int, Sample, int, int]]:
    """(concurrency, median sample, events answered 200, events stored), all rounds."""
    results = []
    for concurrency in env_list("BENCH_SINK_CONCURRENCY", "8,32"):
        samples = []
        answered = 0
        run = f"{placement.replace(' ', '')}c{concurrency}"
        for round_ in range(rounds):
            script = events_lua(folder, f"{run}r{round_}")
            sample, total = run_wrk_counted(cores, url + "/", script, concurrency, seconds)
            samples.append(sample)
            answered += total - sample.errors
        rows = sum(stored_events(database_url, f"{run}r{r}") for r in range(rounds))
        median = sorted(samples, key=lambda s: s.rps)[len(samples) // 2]
        results.append((concurrency, median, answered, rows))
    return results


def start_predictor(
    model: dict[str, Any], tracking_uri: str, pin: list[str], folder: Path, logger_url: str | None
) -> tuple[Process, str]:
    http_port, grpc_port = free_port(), free_port()
    ports = ["--http_port", str(http_port), "--grpc_port", str(grpc_port)]
    env = {**ONE_THREAD, "MLFLOW_TRACKING_URI": tracking_uri, "MODEL_NAME": SERVED}
    if logger_url:
        env["LOGGER_URL"] = logger_url
    process = start_process(
        [*pin, PYTHON, "-m", "serving", "--model_uri", model["uri"], *ports],
        folder / f"predictor-{'log' if logger_url else 'plain'}.log",
        env,
    )
    url = f"http://127.0.0.1:{http_port}"
    wait_ready(f"{url}/v2/health/ready", process)
    return process, url


def payload_log_counts(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "inference_payload_log_events_total":
                counts[sample.labels["outcome"]] = sample.value
    return counts


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("the prediction-log benchmark needs wrk (Debian package 'wrk')")
    seconds = float(os.environ.get("BENCH_DURATION", "3"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    cores = Cores.detect()
    print(f"cores: {os.cpu_count()}; load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, running_postgresql() as database_url:
        folder = Path(tmp)
        sink_rows: list[tuple[str, int, Sample, int, int]] = []
        for placement, pin in (("one core", cores.server), ("unpinned", [])):
            sink, sink_url = start_sink(database_url, pin, folder)
            try:
                measured = measure_sink(
                    cores, sink_url, database_url, folder, seconds, rounds, placement
                )
            finally:
                sink.stop()
            sink_rows += [(placement, *row) for row in measured]
        # Now the predictors take the pinned core: the sink, unpinned, must not take the
        # logging predictor's core (the comparison is of the predictor's own cost).
        sink, sink_url = start_sink(database_url, [], folder)
        try:
            with running_mlflow(folder / "mlflow") as mlflow:
                model = register(mlflow.url, "logreg", "logreg")
                plain = start_predictor(model, mlflow.url, cores.server, folder, None)
                logged = start_predictor(model, mlflow.url, cores.server, folder, f"{sink_url}/")
                try:
                    predictor_rows = measure_predictors(
                        cores, {"off": plain[1], "on": logged[1]}, folder, seconds, rounds
                    )
                    counts = payload_log_counts(logged[1])
                finally:
                    plain[0].stop()
                    logged[0].stop()
        finally:
            sink.stop()
    print_report(sink_rows, predictor_rows, counts)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


def measure_predictors(
    cores: Cores, urls: dict[str, str], folder: Path, seconds: float, rounds: int
) -> dict[str, Sample]:
    script = write_lua(folder, request_body(1))
    for url in urls.values():  # warm-up
        run_wrk(cores, f"{url}/v2/models/{SERVED}/infer", script, 8, 2)
    samples: dict[str, list[Sample]] = {name: [] for name in urls}
    names = list(urls)
    for round_ in range(rounds):
        for name in names[round_ % 2 :] + names[: round_ % 2]:
            url = f"{urls[name]}/v2/models/{SERVED}/infer"
            samples[name].append(run_wrk(cores, url, script, 8, seconds))
    return {n: sorted(s, key=lambda x: x.rps)[len(s) // 2] for n, s in samples.items()}


def print_report(
    sink_rows: list[tuple[str, int, Sample, int, int]],
    predictor_rows: dict[str, Sample],
    counts: dict[str, float],
) -> None:
    print("\nPrediction log: the sink pinned to one core (wrk on the other), then unpinned")
    print("| sink | concurrency | events/s | p50 ms | p99 ms | answered 200 | stored | target |")
    print("|---|---|---|---|---|---|---|---|")
    for placement, concurrency, sample, answered, stored in sink_rows:
        complete = "all" if stored >= answered else "EVENTS MISSING"
        ok = sample.rps >= SINK_TARGET_EVENTS_PER_SECOND and stored >= answered
        verdict = "met" if ok else "MISSED"
        print(
            f"| {placement} | {concurrency} | {sample.rps:.0f} | {sample.p50_ms:.2f} "
            f"| {sample.p99_ms:.2f} "
            f"| {answered} | {stored} ({complete}) "
            f"| ≥ {SINK_TARGET_EVENTS_PER_SECOND}/s: {verdict} |"
        )
    off, on = predictor_rows["off"], predictor_rows["on"]
    print("\nPredictor, logistic regression, batch 1, concurrency 8, LOGGER_URL off and on")
    print("| LOGGER_URL | requests/s | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for name, sample in (("off", off), ("on (mode all)", on)):
        print(f"| {name} | {sample.rps:.0f} | {sample.p50_ms:.2f} | {sample.p99_ms:.2f} |")
    print(
        f"- with the logger on: {on.rps / off.rps:.0%} of the throughput off; events "
        f"sent {counts.get('sent', 0):.0f}, dropped {counts.get('dropped', 0):.0f}, "
        f"failed {counts.get('failed', 0):.0f}"
    )


if __name__ == "__main__":
    main()
