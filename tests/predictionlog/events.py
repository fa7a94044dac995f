"""Payload-logger CloudEvents as KServe's agent posts them (binary mode), for the tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import requests

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"


def headers(event_id: str, event_type: str, time: datetime | None = None) -> dict[str, str]:
    """The attributes KServe's logger sets (pkg/logger/worker.go), as ce-* headers."""
    return {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": event_type,
        "ce-source": "http://localhost:9081/",
        "ce-time": (time or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "ce-inferenceservicename": "breast-cancer",
        "ce-namespace": "mlops",
        "ce-component": "predictor",
        "ce-endpoint": "default",
    }


def v2_request(rows: int = 1) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "features", "shape": [rows, 3], "datatype": "FP64", "data": [0.5] * 3 * rows}
        ]
    }


def v2_response(version: str, rows: int = 1) -> dict[str, Any]:
    return {
        "model_name": "breast-cancer",
        "model_version": version,
        "outputs": [{"name": "label", "shape": [rows], "datatype": "INT64", "data": [1] * rows}],
    }


def post(
    session: requests.Session | Any,
    url: str,
    event_id: str,
    event_type: str,
    body: dict[str, Any],
    time: datetime | None = None,
) -> requests.Response:
    response: requests.Response = session.post(
        f"{url}/", data=orjson.dumps(body), headers=headers(event_id, event_type, time), timeout=30
    )
    return response


def rows(database_url: str, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(
            f"SELECT * FROM predictionlog.predictions WHERE {where} ORDER BY logged_at, id",
            params,
        ).fetchall()


def metric(metrics_text: str, name: str, **labels: str) -> float:
    """The sum of the series of `name` with `labels` on a Prometheus text page."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        float(sample.value)
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )
