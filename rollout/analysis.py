"""The judgement: canary against stable, check by check, into one verdict.

Pure functions over numbers already read from Prometheus, so every threshold and
every inconclusive case is unit-tested without a server.

Checks (each with its threshold from a flag):

- `requests`: both versions answered at least `min_requests` requests in the
  window; otherwise every other check is `inconclusive` (too little evidence is
  not a pass). So are counts that are not finite non-negative numbers, or whose sum
  overflows (1e308 + 1e308 = inf): arithmetic on them proves nothing.
- `success_ratio`: ok / all requests. `invalid` (a 4xx) counts against it: a canary
  whose input schema changed rejects the well-formed requests stable accepts, and
  that shows up as `invalid`, not `error`. Clients' own malformed requests land on
  both versions in proportion to their traffic, so the check compares canary with
  stable instead of with a fixed number: pass when
  canary >= stable - `max_success_drop`.
- `p99_latency`: pass when canary p99 <= stable p99 * `max_p99_ratio` +
  `p99_slack_seconds`; the slack keeps a millisecond-scale service from failing on
  one histogram bucket step.
- `class_drift`: Jensen-Shannon distance between the predicted-class mixes
  (`drift.py`); pass when <= `max_class_drift`; `inconclusive` when either side
  predicted fewer than `min_requests` rows.

Verdict: `fail` if any check fails, else `inconclusive` if any is, else `pass`.

Input drift is reported beside the checks, never a check itself (docs/rollouts.md,
"Input drift"): each version's top feature PSI against its own training split. Canary
and stable get the same traffic split, so inputs that drift on both alike are the
traffic's doing, not the canary's: both versions saw the same rows, so the class-mix
comparison between them still stands. Only the canary drifting means its training data
is unlike what is served (its reference differs from stable's): worth a look, and said
so, but not a failure by itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from contract.metric_names import OK
from rollout.drift import jensen_shannon_distance


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Thresholds:
    min_requests: int = 100
    """Requests each version must have answered in the window for a verdict."""
    max_success_drop: float = 0.01
    """How far the canary's success ratio may fall below stable's."""
    max_p99_ratio: float = 1.5
    """Allowed canary p99 as a multiple of stable's ..."""
    p99_slack_seconds: float = 0.010
    """... plus this many seconds."""
    max_class_drift: float = 0.1
    """Largest Jensen-Shannon distance between the predicted-class mixes."""
    input_psi_threshold: float = 0.2
    """A feature's PSI above this counts as drifted in the input-drift note (reported only)."""

    def __post_init__(self) -> None:
        problems = []
        if self.min_requests < 1:
            problems.append(f"--min-requests must be at least 1, got {self.min_requests}")
        if not 0 <= self.max_success_drop <= 1:
            problems.append(
                f"--max-success-drop must be within [0, 1], got {self.max_success_drop}"
            )
        if not (math.isfinite(self.max_p99_ratio) and self.max_p99_ratio >= 1):
            problems.append(f"--max-p99-ratio must be at least 1, got {self.max_p99_ratio}")
        if not (math.isfinite(self.p99_slack_seconds) and self.p99_slack_seconds >= 0):
            problems.append(f"--p99-slack must be >= 0 seconds, got {self.p99_slack_seconds}")
        if not 0 <= self.max_class_drift <= 1:
            problems.append(f"--max-class-drift must be within [0, 1], got {self.max_class_drift}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class VersionStats:
    """What Prometheus says one version did in the window."""

    version: str
    outcomes: Mapping[str, float] = field(default_factory=dict)
    """Requests by outcome (`ok`, `invalid`, `error`); `increase()` makes them fractional."""
    p99_seconds: float | None = None
    """None when the version has no latency samples in the window."""
    classes: Mapping[str, float] = field(default_factory=dict)
    """Predicted rows by class name."""
    input_psi: Mapping[str, float] = field(default_factory=dict)
    """PSI of each feature's served rows against the version's training split (empty when
    the version has no drift profile or served no rows in the window)."""

    @property
    def top_input_psi(self) -> tuple[str, float] | None:
        """The most drifting feature and its PSI, if any was measured."""
        finite = {k: v for k, v in self.input_psi.items() if math.isfinite(v)}
        if not finite:
            return None
        name = max(finite, key=lambda k: (finite[k], k))
        return name, finite[name]

    @property
    def requests(self) -> float:
        return sum(self.outcomes.values())

    @property
    def predictions(self) -> float:
        return sum(self.classes.values())

    @property
    def success_ratio(self) -> float | None:
        total = self.requests
        return self.outcomes.get(OK, 0.0) / total if total > 0 else None


@dataclass(frozen=True)
class Check:
    name: str
    status: Verdict
    stable: float | None
    canary: float | None
    limit: float | None
    """The number the canary was held to (None when the check could not run)."""
    rule: str
    """The threshold in words, e.g. `>= stable - 0.01`."""
    detail: str


@dataclass(frozen=True)
class Analysis:
    verdict: Verdict
    checks: tuple[Check, ...]
    stable: VersionStats
    canary: VersionStats
    input_drift: str = ""
    """How the versions' inputs drift from their training splits, in one line (reported,
    never judged: module doc)."""

    @property
    def reason(self) -> str:
        """The failed (or else inconclusive) checks' details, for logs and registry tags."""
        for wanted in (Verdict.FAIL, Verdict.INCONCLUSIVE):
            details = [f"{c.name}: {c.detail}" for c in self.checks if c.status is wanted]
            if details:
                return "; ".join(details)
        return "all checks passed"

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _unusable_counts(stats: VersionStats) -> bool:
    """Counts no Prometheus increase() can give (or that overflow when summed): no evidence."""
    counts = [*stats.outcomes.values(), *stats.classes.values()]
    return not all(math.isfinite(v) and v >= 0 for v in counts) or not (
        math.isfinite(stats.requests) and math.isfinite(stats.predictions)
    )


def check_requests(stable: VersionStats, canary: VersionStats, t: Thresholds) -> Check:
    short = [
        f"{side} counts are not finite non-negative numbers (overflow or garbage)"
        if _unusable_counts(stats)
        else f"{side} answered {stats.requests:.0f} < {t.min_requests} requests"
        for side, stats in (("canary", canary), ("stable", stable))
        if _unusable_counts(stats) or stats.requests < t.min_requests
    ]
    return Check(
        name="requests",
        status=Verdict.INCONCLUSIVE if short else Verdict.PASS,
        stable=stable.requests,
        canary=canary.requests,
        limit=float(t.min_requests),
        rule=f">= {t.min_requests} each",
        detail="; ".join(short) or "enough traffic on both versions",
    )


def check_success_ratio(stable: VersionStats, canary: VersionStats, t: Thresholds) -> Check:
    s, c = stable.success_ratio, canary.success_ratio
    rule = f">= stable - {t.max_success_drop:g}"
    if s is None or c is None:
        return Check("success_ratio", Verdict.INCONCLUSIVE, s, c, None, rule, "no requests")
    limit = s - t.max_success_drop
    bad = {k: v for k, v in canary.outcomes.items() if k != OK and v > 0}
    counts = ", ".join(f"{k} {v:.0f}" for k, v in sorted(bad.items())) or "no failures"
    passed = c >= limit
    detail = (
        f"canary {c:.4f} vs stable {s:.4f} ({counts})"
        if passed
        else f"canary success {c:.4f} < {limit:.4f} (stable {s:.4f}; canary {counts})"
    )
    return Check(
        "success_ratio", Verdict.PASS if passed else Verdict.FAIL, s, c, limit, rule, detail
    )


def check_p99_latency(stable: VersionStats, canary: VersionStats, t: Thresholds) -> Check:
    s, c = _finite(stable.p99_seconds), _finite(canary.p99_seconds)
    rule = f"<= {t.max_p99_ratio:g} x stable + {t.p99_slack_seconds:g}s"
    if s is None or c is None:
        missing = " and ".join(n for n, v in (("stable", s), ("canary", c)) if v is None)
        return Check(
            "p99_latency", Verdict.INCONCLUSIVE, s, c, None, rule, f"no latency samples: {missing}"
        )
    limit = s * t.max_p99_ratio + t.p99_slack_seconds
    passed = c <= limit
    detail = f"canary p99 {c * 1000:.1f} ms {'<=' if passed else '>'} {limit * 1000:.1f} ms"
    return Check("p99_latency", Verdict.PASS if passed else Verdict.FAIL, s, c, limit, rule, detail)


def check_class_drift(stable: VersionStats, canary: VersionStats, t: Thresholds) -> Check:
    rule = f"JS distance <= {t.max_class_drift:g}"
    short = [
        f"{side} predicted {stats.predictions:.0f} < {t.min_requests} rows"
        for side, stats in (("canary", canary), ("stable", stable))
        if stats.predictions < t.min_requests
    ]
    if short:
        return Check("class_drift", Verdict.INCONCLUSIVE, None, None, None, rule, "; ".join(short))
    distance = jensen_shannon_distance(stable.classes, canary.classes)
    passed = distance <= t.max_class_drift
    mix = ", ".join(
        f"{name} {share(stable, name):.2f}->{share(canary, name):.2f}"
        for name in sorted(set(stable.classes) | set(canary.classes))
    )
    detail = f"distance {distance:.4f} {'<=' if passed else '>'} {t.max_class_drift:g} ({mix})"
    return Check(
        "class_drift",
        Verdict.PASS if passed else Verdict.FAIL,
        None,
        distance,
        t.max_class_drift,
        rule,
        detail,
    )


def share(stats: VersionStats, class_name: str) -> float:
    total = stats.predictions
    return stats.classes.get(class_name, 0.0) / total if total > 0 else 0.0


def describe_input_drift(stable: VersionStats, canary: VersionStats, t: Thresholds) -> str:
    """The input-drift note of the analysis (module doc): who drifts, and what it means."""
    tops = {"stable": stable.top_input_psi, "canary": canary.top_input_psi}

    def said(side: str) -> str:
        top = tops[side]
        return f"{side} top PSI {top[1]:.3f} ({top[0]})" if top else f"{side} not measured"

    both = f"{said('stable')}, {said('canary')}"
    measured = {side: top for side, top in tops.items() if top is not None}
    if not measured:
        return "not measured: no drift profile counted on either version in the window"
    drifting = [side for side, top in measured.items() if top[1] > t.input_psi_threshold]
    limit = f"PSI > {t.input_psi_threshold:g}"
    if len(measured) < 2:
        return f"{both}; only one version counts its inputs, nothing to compare"
    if not drifting:
        return f"inputs like training on both ({both}; drifted: {limit})"
    if len(drifting) == 2:
        return (
            f"both versions' inputs drift from training ({both}; {limit}): the traffic "
            "changed, not the canary; both saw the same rows, so the class-mix comparison "
            "stands, though neither version's held-out scores describe these inputs"
        )
    side = drifting[0]
    return (
        f"only the {side}'s inputs drift from its training split ({both}; {limit}): both "
        f"get the same traffic, so the {side} was trained on data unlike what is served; "
        "reported, not a failure by itself"
    )


def combine(statuses: list[Verdict]) -> Verdict:
    if Verdict.FAIL in statuses:
        return Verdict.FAIL
    if Verdict.INCONCLUSIVE in statuses:
        return Verdict.INCONCLUSIVE
    return Verdict.PASS


def evaluate(stable: VersionStats, canary: VersionStats, thresholds: Thresholds) -> Analysis:
    """Run every check; with too little traffic every check is inconclusive."""
    traffic = check_requests(stable, canary, thresholds)
    checks = [traffic]
    for run in (check_success_ratio, check_p99_latency, check_class_drift):
        result = run(stable, canary, thresholds)
        if traffic.status is not Verdict.PASS:
            # Values stay visible, but a handful of requests proves nothing either way.
            result = Check(
                result.name,
                Verdict.INCONCLUSIVE,
                result.stable,
                result.canary,
                result.limit,
                result.rule,
                f"too few requests ({result.detail})",
            )
        checks.append(result)
    return Analysis(
        combine([c.status for c in checks]),
        tuple(checks),
        stable,
        canary,
        describe_input_drift(stable, canary, thresholds),
    )
