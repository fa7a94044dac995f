"""The predictor's metric and label names, and the series the chart records from them
(docs/design.md, "Metrics").

The predictor registers these names (serving/metrics.py), the rollout's PromQL queries
them (rollout/queries.py), and the chart's PrometheusRule and Grafana dashboard, which
cannot import Python, are checked against them by tests/contract: a rename here fails
that test until every reader follows.
"""

from __future__ import annotations

# --- labels: every series carries the first two, so stable and canary separate -----------
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
VERSION_LABELS = (MODEL_NAME, MODEL_VERSION)
PROTOCOL = "protocol"
OUTCOME = "outcome"
CLASS_NAME = "class_name"
MODEL_URI = "model_uri"
RUN_ID = "run_id"
RUNTIME = "runtime"
"""What serves a loaded version: `onnx` (ONNX Runtime) or `sklearn`."""
FEATURE = "feature"
"""A feature's name, as the version's signature names it."""
BIN = "bin"
"""A bin of the version's drift profile: `0` (lowest) to at most `19`."""

# --- label values -------------------------------------------------------------------------
OK = "ok"
INVALID = "invalid"
"""The client's fault (a 4xx): never counts against a canary."""
ERROR = "error"
OUTCOMES = (OK, INVALID, ERROR)
REST = "rest"
GRPC = "grpc"
V1 = "v1"
PROTOCOLS = (REST, GRPC, V1)
NO_VERSION = "none"
"""`model_version` of requests answered before any model is loaded."""

# --- the predictor's metric families ------------------------------------------------------
REQUESTS = "inference_requests_total"
"""Counter: model_name, model_version, protocol, outcome."""
REQUEST_DURATION = "inference_request_duration_seconds"
"""Histogram: model_name, model_version, protocol."""
BATCH_SIZE = "inference_batch_size"
"""Histogram: model_name, model_version."""
PREDICTIONS = "inference_predictions_total"
"""Counter: model_name, model_version, class_name."""
MODEL_INFO = "inference_model_info"
"""Gauge = 1: model_name, model_version, model_uri, run_id, runtime."""
MODEL_LOAD_SECONDS = "inference_model_load_seconds"
"""Gauge: model_name, model_version."""
FEATURE_BIN = "inference_feature_bin_total"
"""Counter: model_name, model_version, feature, bin. Served rows per bin of the version's
drift profile (serving/feature_drift.py); 30 features x 10 bins = 300 series a version."""
FEATURE_REFERENCE_SHARE = "inference_feature_reference_share"
"""Gauge: model_name, model_version, feature, bin. The training split's share of the bin."""

PAYLOAD_LOG_EVENTS = "inference_payload_log_events_total"
"""Counter: outcome (`sent`, `dropped`: the queue was full, `failed`: the sink refused or
was away); only with `LOGGER_URL` set (serving/payload_logger.py)."""

HISTOGRAMS = (REQUEST_DURATION, BATCH_SIZE)
FAMILIES = (
    REQUESTS,
    REQUEST_DURATION,
    BATCH_SIZE,
    PREDICTIONS,
    MODEL_INFO,
    MODEL_LOAD_SECONDS,
    FEATURE_BIN,
    FEATURE_REFERENCE_SHARE,
    PAYLOAD_LOG_EVENTS,
)

# --- recorded by the chart's PrometheusRule, per model version ----------------------------
RECORDED_REQUESTS_RATE = "model_version:inference_requests:rate5m"
RECORDED_ERROR_RATIO = "model_version:inference_error_ratio:rate5m"
RECORDED_P99 = "model_version:inference_request_duration_seconds:p99_5m"
RECORDED_FEATURE_SERVED_SHARE = "model_version:inference_feature_served_share:rate30m"
"""Per version, feature and bin: the bin's share of the rows served in the last 30 minutes
(only where the window holds enough rows to judge)."""
RECORDED_FEATURE_PSI = "model_version:inference_feature_psi:rate30m"
"""Per version and feature: the population stability index of the served rows of the
last 30 minutes against the training split's shares."""
RECORDED = (
    RECORDED_REQUESTS_RATE,
    RECORDED_ERROR_RATIO,
    RECORDED_P99,
    RECORDED_FEATURE_SERVED_SHARE,
    RECORDED_FEATURE_PSI,
)


# --- series others export, which the chart's rules and dashboard may read -----------------
EXTERNAL: dict[str, str] = {
    "up": "Prometheus: 1 per target it scraped",
    "ALERTS": "Prometheus: one series per pending or firing alert",
    # prometheus-client's process collector, on the predictor's own /metrics.
    "process_cpu_seconds_total": "prometheus-client",
    "process_resident_memory_bytes": "prometheus-client",
    "process_start_time_seconds": "prometheus-client",
    # KServe's own per-request histograms (kserve/metrics.py), which the predictor keeps.
    "request_preprocess_seconds": "KServe",
    "request_predict_seconds": "KServe",
    "request_postprocess_seconds": "KServe",
    "request_explain_seconds": "KServe",
    # `mlflow server --expose-prometheus` (prometheus-flask-exporter, prefix `mlflow_`).
    "mlflow_http_request_total": "MLflow server",
    "mlflow_http_request_duration_seconds": "MLflow server",
    "mlflow_http_request_exceptions_total": "MLflow server",
    # kube-state-metrics and the kubelet's cAdvisor, as kube-prometheus-stack scrapes them.
    "kube_pod_info": "kube-state-metrics",
    "kube_pod_status_ready": "kube-state-metrics",
    "kube_pod_container_status_restarts_total": "kube-state-metrics",
    "kube_deployment_status_replicas_available": "kube-state-metrics",
    "container_cpu_usage_seconds_total": "cAdvisor",
    "container_memory_working_set_bytes": "cAdvisor",
}
"""Not the project's: listed so a check can tell a typo from another exporter's name."""
_EXTERNAL_HISTOGRAMS = (
    "request_preprocess_seconds",
    "request_predict_seconds",
    "request_postprocess_seconds",
    "request_explain_seconds",
    "mlflow_http_request_duration_seconds",
)


def external_series_names() -> frozenset[str]:
    """`EXTERNAL`'s names, with the histograms' `_bucket`, `_sum` and `_count`."""
    parts = {f"{n}{suffix}" for n in _EXTERNAL_HISTOGRAMS for suffix in _HISTOGRAM_SUFFIXES}
    return frozenset({*EXTERNAL, *parts})


def series_names() -> frozenset[str]:
    """Every series name a query may select that this project defines: the families, a
    histogram's `_bucket`, `_sum` and `_count`, and the recorded series."""
    histogram_parts = {f"{name}{suffix}" for name in HISTOGRAMS for suffix in _HISTOGRAM_SUFFIXES}
    return frozenset({*FAMILIES, *histogram_parts, *RECORDED})


_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
