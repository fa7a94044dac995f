"""Prometheus over plain HTTP (`/api/v1/query`), and the numbers one version needs."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import requests

from rollout import queries
from rollout.analysis import VersionStats
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
                f"to {expr!r}: {message}"
            )
        data = payload.get("data", {})
        if data.get("resultType") != "vector":
            raise UnreachableError(
                f"Prometheus answered a {data.get('resultType')!r}, not a vector, to {expr!r}"
            )
        return [
            Sample(labels=dict(item.get("metric", {})), value=float(item["value"][1]))
            for item in data.get("result", [])
        ]


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _by_label(samples: list[Sample], label: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for sample in samples:
        if math.isfinite(sample.value):
            key = sample.labels.get(label, "")
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def version_stats(
    prometheus: Prometheus,
    model_name: str,
    version: str,
    window: str,
    at: float,
    extra_matchers: str = "",
) -> VersionStats:
    """Requests by outcome, p99 latency and predicted classes of one version."""
    selector = queries.version_selector(model_name, version, extra_matchers)
    outcomes = _by_label(
        prometheus.query(queries.requests_by_outcome(selector, window), at), "outcome"
    )
    latency = prometheus.query(queries.latency_quantile(selector, window), at)
    p99 = latency[0].value if latency and math.isfinite(latency[0].value) else None
    classes = _by_label(
        prometheus.query(queries.predictions_by_class(selector, window), at), "class_name"
    )
    return VersionStats(version=version, outcomes=outcomes, p99_seconds=p99, classes=classes)
