"""The PromQL of the canary analysis, in one place.

The command and the tests run exactly these strings, on a local Prometheus that
scrapes local predictors as well as on kube-prometheus-stack in the cluster. They
select a version by `model_name` and `model_version` only (the predictor's own
labels, see docs/design.md, "Metrics"), never by Kubernetes labels such as pod or
revision, so they work wherever the predictor's /metrics is scraped. Anyone writing
alert rules for the same metrics can call these functions with a label matcher of
their own (`model_version=~".+"`) to keep the shape.
"""

from __future__ import annotations

import re

from contract import metric_names as names

REQUESTS_METRIC = names.REQUESTS
DURATION_METRIC = names.REQUEST_DURATION
PREDICTIONS_METRIC = names.PREDICTIONS
FEATURE_BIN_METRIC = names.FEATURE_BIN
REFERENCE_SHARE_METRIC = names.FEATURE_REFERENCE_SHARE

# One or more label matchers, comma-separated: name="value", name!="v", name=~"re", name!~"re".
_MATCHER = r'\s*[A-Za-z_]\w*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\\n]|\\.)*"\s*'
_MATCHERS = re.compile(rf"^{_MATCHER}(?:,{_MATCHER})*$")
# A Prometheus range-vector duration: one or more <number><unit> parts, e.g. 5m, 1h30m, 90s.
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def validate_window(window: str) -> str:
    """Return `window` when Prometheus accepts it as a range (`5m`, `90s`, `1h30m`)."""
    if not _DURATION.fullmatch(window) or all(c == "0" for c in re.sub(r"\D", "", window)):
        raise ValueError(f"window {window!r} is not a Prometheus duration such as 5m, 90s or 1h")
    return window


def label_value(value: str) -> str:
    """A PromQL string literal for a label value (backslash, quote and newline escaped)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def validate_matchers(matchers: str) -> str:
    """Return `matchers` when they are PromQL label matchers (`namespace="mlops"`)."""
    if not _MATCHERS.fullmatch(matchers):
        raise ValueError(
            f"--match {matchers!r} is not a list of PromQL label matchers such as "
            'namespace="mlops" or namespace="mlops", job=~".*predictor.*"'
        )
    return matchers.strip()


def version_selector(model_name: str, model_version: str, extra: str = "") -> str:
    """The label matchers that pick one served version of one model.

    `extra` (optional, from `--match`) narrows further where one Prometheus scrapes the
    same model in several places, e.g. `namespace="mlops"` in a cluster.
    """
    selector = (
        f"{names.MODEL_NAME}={label_value(model_name)}, "
        f"{names.MODEL_VERSION}={label_value(model_version)}"
    )
    return f"{selector}, {extra.strip()}" if extra.strip() else selector


def requests_by_outcome(selector: str, window: str) -> str:
    """Requests in the window, one sample per `outcome` (ok, invalid, error)."""
    return f"sum by ({names.OUTCOME}) (increase({REQUESTS_METRIC}{{{selector}}}[{window}]))"


def latency_quantile(selector: str, window: str, quantile: float = 0.99) -> str:
    """The latency quantile over the window, from the predictor's request histogram."""
    return (
        f"histogram_quantile({quantile:g}, "
        f"sum by (le) (rate({DURATION_METRIC}_bucket{{{selector}}}[{window}])))"
    )


def predictions_by_class(selector: str, window: str) -> str:
    """Predicted rows in the window, one sample per `class_name`."""
    return f"sum by ({names.CLASS_NAME}) (increase({PREDICTIONS_METRIC}{{{selector}}}[{window}]))"


def requests_served(selector: str) -> str:
    """Requests a version has answered since its counters started (no window)."""
    return f"sum({REQUESTS_METRIC}{{{selector}}})"


def feature_bins(selector: str, window: str) -> str:
    """Served rows in the window, one sample per (`feature`, `bin`) of the drift profile."""
    by = f"{names.FEATURE}, {names.BIN}"
    return f"sum by ({by}) (increase({FEATURE_BIN_METRIC}{{{selector}}}[{window}]))"


def reference_shares(selector: str) -> str:
    """The training split's share of each (`feature`, `bin`); pods of a version agree."""
    by = f"{names.FEATURE}, {names.BIN}"
    return f"max by ({by}) ({REFERENCE_SHARE_METRIC}{{{selector}}})"
