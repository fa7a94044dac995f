"""The serving benchmark reads wrk's report right (its numbers go into docs/performance.md)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.serving import Sample, parse_wrk

WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:50939/v2/models/breast-cancer/infer
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.08ms    3.55ms  21.92ms   85.59%
    Req/Sec   427.30    247.57   828.00     80.00%
  Latency Distribution
     50%  812.00us
     75%    7.48ms
     90%   10.33ms
     99%    1.20s
  425 requests in 1.00s, 87.78KB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:    423.17
Transfer/sec:     87.40KB
""".replace("1.20s\n", "1.20s \n")  # wrk pads values in seconds with a trailing space


def test_wrk_report_gives_rate_percentiles_in_ms_and_all_errors() -> None:
    assert parse_wrk(WRK_OUTPUT) == Sample(rps=423.17, p50_ms=0.812, p99_ms=1200.0, errors=7)


def test_a_report_without_latency_distribution_is_refused() -> None:
    with pytest.raises(ValueError, match="unexpected wrk output"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_the_wire_format_bench_sends_the_same_rows_as_json_and_binary(tmp_path: Any) -> None:
    """Both bodies decode to one matrix through the codec, and the wrk script carries the
    binary body byte for byte (Lua's decimal escapes)."""
    import re

    import numpy as np

    from benchmarks.wire_formats import bodies, write_lua
    from serving import codec
    from serving.codec import binary
    from serving.metadata import ModelSpec

    spec = ModelSpec(30, "FP64", None, ("malignant", "benign"))
    as_json, _ = bodies(600, binary=False)
    as_binary, headers = bodies(600, binary=True)
    header, raw = binary.split(as_binary, headers["Inference-Header-Content-Length"])
    from_json = codec.decode_v2(codec.parse_json(as_json, spec), spec, 1024)
    from_binary = codec.decode_v2(codec.parse_json(header, spec), spec, 1024, raw)
    script = write_lua(tmp_path, "b", as_binary, headers).read_text()
    escaped = re.search(r'wrk.body = "(.*)"', script)

    np.testing.assert_array_equal(from_json.features, from_binary.features)
    assert from_json.features.shape == (600, 30)
    assert from_binary.binary_outputs == frozenset(codec.requested_outputs(None))
    assert escaped is not None
    assert bytes(int(b) for b in escaped.group(1).split("\\")[1:]) == as_binary


def test_the_drift_budget_is_judged_on_the_same_run_s_on_and_off(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks.serving import (
        DRIFT_CELL,
        NO_DRIFT,
        PREDICTOR,
        DriftCost,
        Row,
        print_drift_cost,
    )

    def cell(on_rps: float) -> dict[tuple[str, str, int, int], Row]:
        on = Row(DRIFT_CELL, PREDICTOR, 8, 1, Sample(on_rps, 2.0, 5.0, 0), 0)
        off = Row(DRIFT_CELL, NO_DRIFT, 8, 1, Sample(3000.0, 2.0, 5.0, 0), 0)
        return {(r.model, r.server, r.concurrency, r.batch): r for r in (on, off)}

    print_drift_cost(cell(2940.0), (1.5, 0.8))
    print_drift_cost(cell(2700.0), None)
    # Paired rounds judge on their median ratio, not on the medians' ratio.
    cpu = {PREDICTOR: [330.0, 340.0, 500.0], NO_DRIFT: [320.0, 330.0, 320.0]}
    print_drift_cost(cell(2700.0), None, DriftCost([0.01, 0.03, 0.2], cpu))
    met, missed, paired = capsys.readouterr().out.split("- feature drift on: ")[1:]
    assert "server CPU per request: 340 µs on vs 320 µs off (3.0% of the rate" in paired
    assert "(2.0% fewer, medians; budget 5 %) ok" in met
    assert "1.50 µs per one-row request" in met
    assert "(10.0% fewer, medians; budget 5 %) MISSED" in missed
    assert "(3.0% fewer, median of 3 paired rounds; budget 5 %) ok" in paired


def test_the_in_process_drift_cost_is_measured() -> None:
    from benchmarks.serving import drift_cost_us

    count_us, scrape_ms = drift_cost_us(repeat=200)
    assert 0 < count_us < 10_000 and 0 < scrape_ms < 10_000
