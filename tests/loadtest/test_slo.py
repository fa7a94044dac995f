"""The SLO verdict and the per-version split that end every load test."""

from __future__ import annotations

import re

import pytest

from loadtest import slo

LIMITS = slo.SloLimits(max_failure_ratio=0.01, p99_ms=200)


def verdicts(summary: slo.Summary) -> dict[str, bool]:
    return {check.name: check.passed for check in summary.checks}


def test_a_run_within_both_limits_passes_with_exit_code_0() -> None:
    summary = slo.evaluate(1000, 10, 150.0, {"1": 900, "2": 90}, LIMITS)

    assert verdicts(summary) == {"requests": True, "failure_ratio": True, "p99_latency": True}
    assert (summary.passed, summary.exit_code) == (True, 0)


def test_too_many_failures_fail_the_run() -> None:
    summary = slo.evaluate(1000, 11, 150.0, {"1": 989}, LIMITS)

    assert verdicts(summary)["failure_ratio"] is False
    assert summary.exit_code == 1
    assert "11/1000 failed = 1.10% (limit 1.00%)" in slo.format_summary(summary)


def test_a_slow_p99_fails_the_run() -> None:
    summary = slo.evaluate(1000, 0, 201.0, {"1": 1000}, LIMITS)

    assert verdicts(summary) == {"requests": True, "failure_ratio": True, "p99_latency": False}
    assert summary.exit_code == 1


def test_a_run_without_requests_fails_rather_than_passing_on_no_evidence() -> None:
    summary = slo.evaluate(0, 0, None, {}, LIMITS)

    assert verdicts(summary) == {"requests": False, "failure_ratio": False, "p99_latency": False}
    assert summary.exit_code == 1
    assert "no request was made" in slo.format_summary(summary)


def test_the_split_orders_versions_numerically_with_their_shares() -> None:
    split = slo.version_split({"10": 96, "9": 904})

    assert split == [("9", 904, 0.904), ("10", 96, 0.096)]


def test_the_summary_prints_the_observed_split_and_the_verdict() -> None:
    summary = slo.evaluate(1100, 0, 20.0, {"1": 904, "2": 96}, LIMITS, rps=110.0, median_ms=6.0)

    text = slo.format_summary(summary)

    assert text.splitlines() == [
        "1100 requests, 0 failed, 110 req/s, median 6 ms",
        "answers per model_version (1000 checked infer answers):",
        "  version 1           904   90.4%",
        "  version 2            96    9.6%",
        "SLO requests       PASS  1100 requests",
        "SLO failure_ratio  PASS  0/1100 failed = 0.00% (limit 1.00%)",
        "SLO p99_latency    PASS  p99 20 ms (limit 200 ms)",
        "SLO verdict: PASS (exit code 0)",
    ]
    assert summary.to_dict()["version_share"] == {"1": 0.904, "2": 0.096}
    assert summary.to_dict()["verdict"] == "pass"


@pytest.mark.parametrize(
    ("ratio", "p99", "message"),
    [
        (1.5, 100.0, "--slo-max-failure-ratio must be within [0, 1]"),
        (-0.1, 100.0, "--slo-max-failure-ratio must be within [0, 1]"),
        (0.01, 0.0, "--slo-p99-ms must be a positive number"),
        (0.01, float("inf"), "--slo-p99-ms must be a positive number"),
    ],
)
def test_limits_outside_their_range_are_refused(ratio: float, p99: float, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        slo.SloLimits(max_failure_ratio=ratio, p99_ms=p99)
