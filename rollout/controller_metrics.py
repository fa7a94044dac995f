"""The controller's own metrics, per model: where each rollout stands and what analyses said.

A registry of their own (not prometheus_client's global one), so two controllers in
one test process do not share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from rollout.analysis import Verdict
from rollout.progress import PHASES, Phase


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.phase = Gauge(
            "rollout_phase",
            "1 for the phase the model's rollout is in (idle, progressing, promoting, "
            "rolling_back), 0 for the others",
            ["model_name", "phase"],
            registry=self.registry,
        )
        self.canary_percent = Gauge(
            "rollout_canary_percent",
            "Share of the traffic the canary takes (0 when no rollout runs)",
            ["model_name"],
            registry=self.registry,
        )
        self.analyses = Counter(
            "rollout_analysis",
            "Analyses of a canary against stable, by verdict (unavailable: Prometheus did "
            "not answer)",
            ["model_name", "verdict"],
            registry=self.registry,
        )

    def set_phase(self, model_name: str, phase: Phase, percent: int) -> None:
        for each in PHASES:
            self.phase.labels(model_name, each.value).set(1 if each is phase else 0)
        self.canary_percent.labels(model_name).set(percent if phase is Phase.PROGRESSING else 0)

    def count_analysis(self, model_name: str, verdict: Verdict | str) -> None:
        self.analyses.labels(model_name, str(verdict)).inc()
