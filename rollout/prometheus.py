"""Prometheus over plain HTTP (`/api/v1/query`), and the numbers one version needs."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import requests

from contract import metric_names as names
from rollout import queries
from rollout.analysis import VersionStats
from rollout.drift import feature_psi
from rollout.errors import UnreachableError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    value: float


class Prometheus:
    """A thin client of Prometheus' HTTP API: instant queries, evaluated at a given time."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        """An instant vector; raises UnreachableError with Prometheus' own message."""
        params: dict[str, str] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        endpoint = f"{self.url}/api/v1/query"
        logger.debug("PromQL at %s: %s", params.get("time", "now"), expr)
        try:
            response = self._session.get(endpoint, params=params, timeout=self.timeout)
        except requests.RequestException as e:
            raise UnreachableError(
                f"Prometheus at {self.url} is unreachable ({e.__class__.__name__}); "
                "check --prometheus-url (on kind: port-forward the Prometheus service)"
            ) from e
        payload = _json(response)
        if response.status_code != 200 or payload.get("status") != "success":
            message = payload.get("error") or response.text[:300]
            raise UnreachableError(
                f"Prometheus at {self.url} answered HTTP {response.status_code} "
                f"to {expr!r}: {_clip(str(message))}"
            )
        try:
            return parse_vector(payload.get("data"))
        except MalformedAnswer as e:
            raise UnreachableError(
                f"Prometheus at {self.url} answered {expr!r} with a malformed result: {e}; "
                "is --prometheus-url a Prometheus HTTP API?"
            ) from e


class MalformedAnswer(ValueError):
    """A `data` object that is not an instant vector of [time, "number"] samples."""


def _clip(text: str, limit: int = 300) -> str:
    """One line of at most `limit` characters of what the server sent."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _short(value: Any, limit: int = 120) -> str:
    """A bounded quote of a value the server sent, for one-line messages."""
    return _clip(repr(value), limit)


def parse_vector(data: Any) -> list[Sample]:
    """The samples of an instant-vector answer (Prometheus HTTP API, "Instant vectors").

    Everything is checked, so a proxy or a broken exporter answering garbage becomes
    one MalformedAnswer with a bounded quote instead of a KeyError or TypeError deep in
    the analysis. The value strings "NaN", "+Inf" and "-Inf" are numbers here (Prometheus
    writes them that way); whether they are usable is the caller's question.
    """
    if not isinstance(data, dict):
        raise MalformedAnswer(f"`data` is {_short(data)}, not an object")
    if data.get("resultType") != "vector":
        raise MalformedAnswer(f"resultType is {_short(data.get('resultType'))}, not 'vector'")
    result = data.get("result")
    if not isinstance(result, list):
        raise MalformedAnswer(f"`result` is {_short(result)}, not a list")
    samples = []
    for item in result:
        if not isinstance(item, dict):
            raise MalformedAnswer(f"a result item is {_short(item)}, not an object")
        labels = item.get("metric", {})
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise MalformedAnswer(f"`metric` is {_short(labels)}, not a map of label strings")
        pair = item.get("value")
        if not isinstance(pair, list) or len(pair) != 2:
            raise MalformedAnswer(f'`value` is {_short(pair)}, not [time, "number"]')
        raw = pair[1]
        # Prometheus sends the number as a string; a bare JSON number is tolerated,
        # a bool or null is not (float(True) would read as 1).
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise MalformedAnswer(f"sample value {_short(raw)} is not a number string")
        try:
            value = float(raw)
        except ValueError as e:
            raise MalformedAnswer(f"sample value {_short(raw)} is not a number") from e
        samples.append(Sample(labels=dict(labels), value=value))
    return samples


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


MAX_COUNT = float(2**53)
"""Counts above this are not counts: a float64 counter stops counting by one at 2**53,
and sums of such numbers overflow to inf (1e308 + 1e308), which must not pass a check."""


def _by_label(samples: list[Sample], label: str, expr: str, url: str) -> dict[str, float]:
    """Sum the samples per label value; a count that cannot be one is a malformed answer."""
    totals: dict[str, float] = {}
    for sample in samples:
        if not (math.isfinite(sample.value) and 0 <= sample.value <= MAX_COUNT):
            raise UnreachableError(
                f"Prometheus at {url} answered {expr!r} with the count {sample.value!r}, which no "
                f"counter increase can be (expected a finite number in [0, 2**53])"
            )
        key = sample.labels.get(label, "")
        totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def _p99(samples: list[Sample], expr: str, url: str) -> float | None:
    """The quantile, or None where there is none (no sample, NaN or +Inf: no usable bucket)."""
    if not samples or not math.isfinite(samples[0].value):
        return None
    if samples[0].value < 0:
        raise UnreachableError(
            f"Prometheus at {url} answered {expr!r} with a negative latency {samples[0].value!r}"
        )
    return samples[0].value


def _by_feature_bin(
    samples: list[Sample], expr: str, url: str, largest: float = MAX_COUNT
) -> dict[tuple[str, str], float]:
    """Values by (feature, bin); one that cannot be a count or a share is malformed."""
    values: dict[tuple[str, str], float] = {}
    for sample in samples:
        if not (math.isfinite(sample.value) and 0 <= sample.value <= largest):
            raise UnreachableError(
                f"Prometheus at {url} answered {expr!r} with {sample.value!r}, expected a "
                f"finite number in [0, {largest:g}]"
            )
        key = (sample.labels.get(names.FEATURE, ""), sample.labels.get(names.BIN, ""))
        values[key] = values.get(key, 0.0) + sample.value
    return values


def input_psi(prometheus: Prometheus, selector: str, window: str, at: float) -> dict[str, float]:
    """Each feature's PSI of the version's served rows in the window against its training
    split (rollout.drift); empty for a version without a drift profile or served rows."""
    bins_expr = queries.feature_bins(selector, window)
    shares_expr = queries.reference_shares(selector)
    url = prometheus.url
    served = _by_feature_bin(prometheus.query(bins_expr, at), bins_expr, url)
    if not served:
        return {}
    shares = _by_feature_bin(prometheus.query(shares_expr, at), shares_expr, url, largest=1.0)
    return feature_psi(served, shares)


def version_stats(
    prometheus: Prometheus,
    model_name: str,
    version: str,
    window: str,
    at: float,
    extra_matchers: str = "",
) -> VersionStats:
    """Requests by outcome, p99 latency, predicted classes and input PSI of one version."""
    selector = queries.version_selector(model_name, version, extra_matchers)
    outcomes_expr = queries.requests_by_outcome(selector, window)
    latency_expr = queries.latency_quantile(selector, window)
    classes_expr = queries.predictions_by_class(selector, window)
    query, url = prometheus.query, prometheus.url
    return VersionStats(
        version=version,
        outcomes=_by_label(query(outcomes_expr, at), names.OUTCOME, outcomes_expr, url),
        p99_seconds=_p99(query(latency_expr, at), latency_expr, url),
        classes=_by_label(query(classes_expr, at), names.CLASS_NAME, classes_expr, url),
        input_psi=input_psi(prometheus, selector, window, at),
    )
