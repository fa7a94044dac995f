"""The predictor's Prometheus metrics (docs/design.md, "Metrics"), served with KServe's own
at `:HTTP_PORT/metrics`.

Every series carries `model_name` and `model_version`, so a stable and a canary
revision separate in one query. Label values are few and fixed: no ids, no feature
values. The children a request touches are bound once per loaded version, so a request
pays for a few increments, not for label lookups.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from contract import metric_names as names
from contract.drift_profile import DriftProfile
from contract.metric_names import OUTCOMES, PROTOCOLS
from serving.feature_drift import FeatureCounter, FeatureDriftCollector

# From a fraction of a millisecond (a batch-1 logistic regression) to seconds.
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class PredictorMetrics:
    """The metric families, registered once per registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        version = list(names.VERSION_LABELS)
        self.requests = Counter(
            names.REQUESTS,
            "Inference requests answered, by protocol and outcome (ok, invalid, error).",
            [*version, names.PROTOCOL, names.OUTCOME],
            registry=registry,
        )
        self.duration = Histogram(
            names.REQUEST_DURATION,
            "Time from request received to response ready, inside the predictor.",
            [*version, names.PROTOCOL],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            names.BATCH_SIZE,
            "Rows per answered inference request.",
            version,
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.predictions = Counter(
            names.PREDICTIONS,
            "Predicted rows, by predicted class.",
            [*version, names.CLASS_NAME],
            registry=registry,
        )
        self.model_info = Gauge(
            names.MODEL_INFO,
            "The loaded model version (value 1), with its registry URI, training run and the "
            "runtime serving it (onnx, sklearn).",
            [*version, names.MODEL_URI, names.RUN_ID, names.RUNTIME],
            registry=registry,
        )
        self.model_load_seconds = Gauge(
            names.MODEL_LOAD_SECONDS,
            "Seconds the successful load took: registry lookup, download, load, warm-up.",
            version,
            registry=registry,
        )
        self.feature_drift = FeatureDriftCollector(registry)

        self.payload_log_events = Counter(
            names.PAYLOAD_LOG_EVENTS,
            "Payload-log CloudEvents the predictor posted to LOGGER_URL (sent), could not "
            "queue because the sink was slow or down (dropped), or the sink did not take "
            "(failed).",
            [names.OUTCOME],
            registry=registry,
        )

    def bind(
        self,
        model_name: str,
        model_version: str,
        class_names: Sequence[str] = (),
        profile: DriftProfile | None = None,
    ) -> BoundMetrics:
        """The series of one version; with a drift profile, its rows are counted too."""
        return BoundMetrics(self, model_name, model_version, class_names, profile)


class BoundMetrics:
    """The series of one model version; what the request path records into."""

    def __init__(
        self,
        metrics: PredictorMetrics,
        model_name: str,
        model_version: str,
        class_names: Sequence[str],
        profile: DriftProfile | None = None,
    ) -> None:
        self.metrics = metrics
        self.model_name = model_name
        self.model_version = model_version
        version = (model_name, model_version)  # label values in declaration order
        # Created up front so every series exists (at 0) from the first scrape on:
        # rate() and the canary analysis then see a version's first request.
        self._requests = {
            (protocol, outcome): metrics.requests.labels(*version, protocol, outcome)
            for protocol in PROTOCOLS
            for outcome in OUTCOMES
        }
        self._duration = {p: metrics.duration.labels(*version, p) for p in PROTOCOLS}
        self._batch = metrics.batch_size.labels(*version)
        self._by_class = [metrics.predictions.labels(*version, name) for name in class_names]
        self.features: FeatureCounter | None = (
            None
            if profile is None
            else metrics.feature_drift.counter(model_name, model_version, profile)
        )
        """Where served rows are counted into drift bins; None when they are not."""

    def request(self, protocol: str, outcome: str, seconds: float) -> None:
        self._requests[protocol, outcome].inc()
        self._duration[protocol].observe(seconds)

    def predicted(self, labels: np.ndarray[Any, np.dtype[np.int64]]) -> None:
        self._batch.observe(len(labels))
        by_class = self._by_class
        if len(labels) == 1:
            by_class[int(labels[0])].inc()
            return
        for index, count in enumerate(np.bincount(labels, minlength=len(by_class)).tolist()):
            if count:
                by_class[index].inc(count)

    def loaded(
        self, model_uri: str, run_id: str, load_seconds: float, runtime: str = "sklearn"
    ) -> None:
        version = (self.model_name, self.model_version)
        self.metrics.model_info.labels(*version, model_uri, run_id, runtime).set(1)
        self.metrics.model_load_seconds.labels(*version).set(load_seconds)


@functools.cache
def default_metrics() -> PredictorMetrics:
    """The process-wide metric families in prometheus-client's default registry, which
    KServe's `/metrics` serves. Created on first use, never at import."""
    return PredictorMetrics(REGISTRY)
