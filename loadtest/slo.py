"""The end of a load test: which model versions answered, and whether the run met its
SLOs. The verdict becomes locust's exit code, so a load test can gate a rollout.

Pure functions over numbers locust already collected; `format_summary` is what the
locust run and `make demo` print.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

EXIT_PASS = 0
# Locust's own code for "the run had errors" (its --exit-code-on-error default).
EXIT_FAIL = 1


@dataclass(frozen=True)
class SloLimits:
    max_failure_ratio: float = 0.01
    """Largest share of failed requests (HTTP errors, malformed answers) that passes."""
    p99_ms: float = 500.0
    """Largest 99th-percentile response time, in milliseconds, over all requests."""

    def __post_init__(self) -> None:
        if not 0 <= self.max_failure_ratio <= 1:
            raise ValueError(
                f"--slo-max-failure-ratio must be within [0, 1], got {self.max_failure_ratio}"
            )
        if not (math.isfinite(self.p99_ms) and self.p99_ms > 0):
            raise ValueError(f"--slo-p99-ms must be a positive number, got {self.p99_ms}")


@dataclass(frozen=True)
class SloCheck:
    name: str
    value: float | None
    limit: float
    passed: bool
    detail: str


@dataclass(frozen=True)
class Summary:
    """One load test's outcome, as printed and as written to `--summary-json`."""

    requests: int
    failures: int
    p99_ms: float | None
    versions: dict[str, int]
    """Answers that passed the checks, per `model_version`."""
    checks: tuple[SloCheck, ...] = field(default=())
    rps: float | None = None
    """Requests per second over the run (informational)."""
    median_ms: float | None = None
    """Median response time (informational)."""

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def exit_code(self) -> int:
        return EXIT_PASS if self.passed else EXIT_FAIL

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": "pass" if self.passed else "fail",
            "requests": self.requests,
            "failures": self.failures,
            "failure_ratio": _ratio(self.failures, self.requests),
            "p99_ms": self.p99_ms,
            "median_ms": self.median_ms,
            "rps": self.rps,
            "versions": dict(self.versions),
            "version_share": {v: share for v, _, share in version_split(self.versions)},
            "checks": [asdict(check) for check in self.checks],
        }


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def evaluate(
    requests: int,
    failures: int,
    p99_ms: float | None,
    versions: Mapping[str, int],
    limits: SloLimits,
    *,
    rps: float | None = None,
    median_ms: float | None = None,
) -> Summary:
    """Judge a run: it must have made requests, failed few enough, and been fast enough."""
    ratio = _ratio(failures, requests)
    checks = (
        SloCheck(
            "requests",
            float(requests),
            1.0,
            requests >= 1,
            f"{requests} requests" if requests else "no request was made: nothing to judge",
        ),
        SloCheck(
            "failure_ratio",
            ratio,
            limits.max_failure_ratio,
            ratio is not None and ratio <= limits.max_failure_ratio,
            f"{failures}/{requests} failed"
            + (f" = {ratio:.2%}" if ratio is not None else "")
            + f" (limit {limits.max_failure_ratio:.2%})",
        ),
        SloCheck(
            "p99_latency",
            p99_ms,
            limits.p99_ms,
            p99_ms is not None and p99_ms <= limits.p99_ms,
            (f"p99 {p99_ms:.0f} ms" if p99_ms is not None else "no p99")
            + f" (limit {limits.p99_ms:.0f} ms)",
        ),
    )
    return Summary(requests, failures, p99_ms, dict(versions), checks, rps, median_ms)


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


def version_split(counts: Mapping[str, int]) -> list[tuple[str, int, float]]:
    """(version, answers, share of all answers) in version order."""
    total = sum(counts.values())
    return [
        (version, counts[version], counts[version] / total if total else 0.0)
        for version in sorted(counts, key=_version_key)
    ]


def format_summary(summary: Summary) -> str:
    """The lines a person reads at the end of a run."""
    split = version_split(summary.versions)
    answered = sum(summary.versions.values())
    rate = f", {summary.rps:.0f} req/s" if summary.rps is not None else ""
    median = f", median {summary.median_ms:.0f} ms" if summary.median_ms is not None else ""
    lines = [f"{summary.requests} requests, {summary.failures} failed{rate}{median}"]
    lines.append(f"answers per model_version ({answered} checked infer answers):")
    lines += [f"  version {v:<6} {n:>8}  {share:6.1%}" for v, n, share in split]
    if not split:
        lines.append("  (none: no infer request got a valid answer)")
    lines += [
        f"SLO {check.name:<14} {'PASS' if check.passed else 'FAIL'}  {check.detail}"
        for check in summary.checks
    ]
    lines.append(
        f"SLO verdict: {'PASS' if summary.passed else 'FAIL'} (exit code {summary.exit_code})"
    )
    return "\n".join(lines)
