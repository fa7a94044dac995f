"""The sink's Prometheus metrics, in a registry of its own (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

EVENTS = "predictionlog_events_total"
"""Counter: `type` (request, response, unknown) and `outcome` (stored, invalid, error)."""
BATCH_SIZE = "predictionlog_write_batch_events"
WRITE_DURATION = "predictionlog_write_duration_seconds"
PRUNED = "predictionlog_retention_deleted_rows_total"
LAST_PRUNE = "predictionlog_retention_last_run_timestamp_seconds"
OUTCOMES = ("stored", "invalid", "error")
TYPES = ("request", "response", "unknown")


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._events = Counter(
            EVENTS.removesuffix("_total"),
            "Payload-logger events received, by type and outcome (invalid: refused with a "
            "4xx and not stored; error: the database did not take it, 503).",
            ["type", "outcome"],
            registry=self.registry,
        )
        for kind in TYPES:  # every series exists from the start, at 0
            for outcome in OUTCOMES:
                self._events.labels(kind, outcome)
        self._batch = Histogram(
            BATCH_SIZE,
            "Events per database transaction (one group commit).",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=self.registry,
        )
        self._write = Histogram(
            WRITE_DURATION,
            "Seconds one batch took to commit.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self._pruned = Counter(
            PRUNED.removesuffix("_total"),
            "Rows deleted by the retention setting.",
            registry=self.registry,
        )
        self._last_prune = Gauge(
            LAST_PRUNE, "When retention last completed (Unix time).", registry=self.registry
        )

    def event(self, kind: str, outcome: str) -> None:
        self._events.labels(kind, outcome).inc()

    def batch(self, size: int, seconds: float) -> None:
        self._batch.observe(size)
        self._write.observe(seconds)

    def pruned(self, rows: int) -> None:
        self._pruned.inc(rows)
        self._last_prune.set_to_current_time()
