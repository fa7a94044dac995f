"""JSON against the binary tensor extension, both ways: rows/s of the predictor for
batches of 256 and 1,024 rows, and the share of the server's CPU that decoding and
encoding take in each.

The predictor (logistic-regression pipeline registered by the training package) runs
pinned to one core, `wrk` on the other, each format in turn for several rounds (the
median reported). Server CPU per request is the process's user + system time over a
round divided by the requests it answered; the codec's part is the same body decoded
and the answer encoded in this process, timed over many repeats. Their ratio is the
share. Environment: BENCH_DURATION (seconds per round, default 3), BENCH_ROUNDS
(default 3), BENCH_WIRE_BATCHES (default 256,1024), BENCH_WIRE_CONCURRENCY (default 4).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import requests

from benchmarks.serving import (
    ONE_THREAD,
    SERVED,
    Cores,
    env_list,
    register,
    run_wrk,
    wait_ready,
)
from demo.services import PYTHON, free_port, running_mlflow, start_process

FORMATS = ("json", "binary")
_TICKS = os.sysconf("SC_CLK_TCK")


def bodies(rows: int, binary: bool) -> tuple[bytes, dict[str, str]]:
    """A request of `rows` rows, and its headers; binary asks for binary outputs too."""
    from sklearn.datasets import load_breast_cancer

    # The data set has 569 rows: larger batches repeat them.
    data = np.resize(load_breast_cancer().data, (rows, 30)).astype("<f8")
    if not binary:
        tensor = {
            "name": "features",
            "shape": [rows, 30],
            "datatype": "FP64",
            "data": data.tolist(),
        }
        return json.dumps({"inputs": [tensor]}).encode(), {"Content-Type": "application/json"}
    raw = data.tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [rows, 30],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return header + raw, headers


def write_lua(folder: Path, name: str, body: bytes, headers: dict[str, str]) -> Path:
    """A wrk script posting `body` byte for byte (Lua's decimal escapes)."""
    lines = ['wrk.method = "POST"']
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    escaped = "".join(f"\\{b}" for b in body)
    lines.append(f'wrk.body = "{escaped}"')
    script = folder / f"{name}.lua"
    script.write_text("\n".join(lines) + "\n")
    return script


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def codec_us(body: bytes, headers: dict[str, str], model_dir: Path, repeat: int) -> float:
    """CPU microseconds to decode `body` and encode its answer, as the predictor's route
    does, in this process (the estimator's call excluded)."""
    from serving import codec
    from serving.codec import binary
    from serving.loader import load_model_dir

    loaded = load_model_dir(model_dir, "1", "bench", "models:/bench/1")
    spec = loaded.spec
    header_length = headers.get("Inference-Header-Content-Length")

    def decode() -> codec.DecodedRequest:
        if header_length is None:
            return codec.decode_v2(codec.parse_json(body, spec), spec, 4096)
        header, raw = binary.split(body, header_length)
        return codec.decode_v2(codec.parse_json(header, spec), spec, 4096, raw)

    decoded = decode()
    prediction = loaded.predict(decoded.features)

    def once() -> None:
        codec.encode_v2(prediction, decode(), SERVED, "1")

    return best_of(once, repeat) * 1e6


def best_of(call: Callable[[], Any], repeat: int, rounds: int = 5) -> float:
    """CPU seconds per call (process time: the machine may be shared, like the
    server's CPU time it is compared with)."""
    results = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(repeat):
            call()
        results.append((time.process_time() - started) / repeat)
    return min(results)


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("the wire-format benchmark needs wrk (Debian package 'wrk')")
    seconds = float(os.environ.get("BENCH_DURATION", "3"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    batches = env_list("BENCH_WIRE_BATCHES", "256,1024")
    concurrency = env_list("BENCH_WIRE_CONCURRENCY", "4")[0]
    cores = Cores.detect()
    print(f"cores: {os.cpu_count()}; load average at start: {os.getloadavg()[0]:.2f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp, running_mlflow(Path(tmp) / "mlflow") as mlflow:
        folder = Path(tmp)
        model = register(mlflow.url, "wire", "logreg")
        from serving.registry import fetch, parse_model_uri

        model_dir = fetch(parse_model_uri(model["uri"]), mlflow.url, folder / "model", 30).path
        port = free_port()
        command = [PYTHON, "-m", "serving", "--model_uri", model["uri"]]
        command += ["--http_port", str(port), "--grpc_port", str(free_port())]
        process = start_process(
            [*cores.server, *command],
            folder / "predictor.log",
            {**ONE_THREAD, "MLFLOW_TRACKING_URI": mlflow.url, "MODEL_NAME": SERVED},
        )
        url = f"http://127.0.0.1:{port}"
        infer = f"{url}/v2/models/{SERVED}/infer"
        try:
            wait_ready(url + "/v2/health/ready", process)
            pid = process.popen.pid
            print("| batch | format | rows/s | requests/s | server CPU µs/request ", end="")
            print("| codec µs | codec share |")
            print("|---:|---|---:|---:|---:|---:|---:|")
            for batch in batches:
                cells = {}
                for fmt in FORMATS:
                    body, headers = bodies(batch, fmt == "binary")
                    answer = requests.post(infer, data=body, headers=headers, timeout=30)
                    answer.raise_for_status()
                    cells[fmt] = (write_lua(folder, f"{fmt}-{batch}", body, headers), body, headers)
                    run_wrk(cores, infer, cells[fmt][0], concurrency, 1)  # warm-up
                samples: dict[str, list[tuple[float, float]]] = {f: [] for f in FORMATS}
                for round_ in range(rounds):
                    for fmt in FORMATS[round_ % 2 :] + FORMATS[: round_ % 2]:
                        before = cpu_seconds(pid)
                        sample = run_wrk(cores, infer, cells[fmt][0], concurrency, seconds)
                        cpu = cpu_seconds(pid) - before
                        samples[fmt].append((sample.rps, cpu / max(sample.rps * seconds, 1)))
                for fmt in FORMATS:
                    rps = statistics.median(s[0] for s in samples[fmt])
                    cpu_us = statistics.median(s[1] for s in samples[fmt]) * 1e6
                    _, body, headers = cells[fmt]
                    spent = codec_us(body, headers, model_dir, max(10, 20000 // batch))
                    print(
                        f"| {batch} | {fmt} | {rps * batch:,.0f} | {rps:,.0f} | {cpu_us:,.0f} "
                        f"| {spent:,.0f} | {spent / cpu_us:.0%} |",
                        flush=True,
                    )
        finally:
            process.stop()
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
