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

from serving.errors import ERROR, INVALID, OK

REST = "rest"
GRPC = "grpc"
V1 = "v1"
PROTOCOLS = (REST, GRPC, V1)
OUTCOMES = (OK, INVALID, ERROR)
NO_VERSION = "none"
"""`model_version` of requests answered before any model is loaded."""

# From a fraction of a millisecond (a batch-1 logistic regression) to seconds.
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class PredictorMetrics:
    """The metric families, registered once per registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        version = ["model_name", "model_version"]
        self.requests = Counter(
            "inference_requests_total",
            "Inference requests answered, by protocol and outcome (ok, invalid, error).",
            [*version, "protocol", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "inference_request_duration_seconds",
            "Time from request received to response ready, inside the predictor.",
            [*version, "protocol"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "inference_batch_size",
            "Rows per answered inference request.",
            version,
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.predictions = Counter(
            "inference_predictions_total",
            "Predicted rows, by predicted class.",
            [*version, "class_name"],
            registry=registry,
        )
        self.model_info = Gauge(
            "inference_model_info",
            "The loaded model version (value 1), with its registry URI, training run and the "
            "runtime serving it (onnx, sklearn).",
            [*version, "model_uri", "run_id", "runtime"],
            registry=registry,
        )
        self.model_load_seconds = Gauge(
            "inference_model_load_seconds",
            "Seconds the successful load took: registry lookup, download, load, warm-up.",
            version,
            registry=registry,
        )

    def bind(
        self, model_name: str, model_version: str, class_names: Sequence[str] = ()
    ) -> BoundMetrics:
        return BoundMetrics(self, model_name, model_version, class_names)


class BoundMetrics:
    """The series of one model version; what the request path records into."""

    def __init__(
        self,
        metrics: PredictorMetrics,
        model_name: str,
        model_version: str,
        class_names: Sequence[str],
    ) -> None:
        self.metrics = metrics
        self.model_name = model_name
        self.model_version = model_version
        labels = {"model_name": model_name, "model_version": model_version}
        # Created up front so every series exists (at 0) from the first scrape on:
        # rate() and the canary analysis then see a version's first request.
        self._requests = {
            (protocol, outcome): metrics.requests.labels(
                **labels, protocol=protocol, outcome=outcome
            )
            for protocol in PROTOCOLS
            for outcome in OUTCOMES
        }
        self._duration = {p: metrics.duration.labels(**labels, protocol=p) for p in PROTOCOLS}
        self._batch = metrics.batch_size.labels(**labels)
        self._by_class = [
            metrics.predictions.labels(**labels, class_name=name) for name in class_names
        ]

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
        labels = {"model_name": self.model_name, "model_version": self.model_version}
        self.metrics.model_info.labels(
            **labels, model_uri=model_uri, run_id=run_id, runtime=runtime
        ).set(1)
        self.metrics.model_load_seconds.labels(**labels).set(load_seconds)


@functools.cache
def default_metrics() -> PredictorMetrics:
    """The process-wide metric families in prometheus-client's default registry, which
    KServe's `/metrics` serves. Created on first use, never at import."""
    return PredictorMetrics(REGISTRY)
