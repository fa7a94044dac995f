"""A canned Prometheus for the Kubernetes-side tests of `auto`: it answers the analysis'
instant queries from a table of numbers and records what it was asked.

The PromQL itself runs on a real `prometheus` in test_analysis_prometheus.py; here
only the verdict matters (pass / fail / inconclusive) so the test can watch the
patches `auto` sends in response.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support import serving_http

_VERSION = re.compile(r'model_version="([^"]+)"')


@dataclass
class VersionNumbers:
    outcomes: dict[str, float]
    p99_seconds: float
    classes: dict[str, float]


HEALTHY = VersionNumbers({"ok": 500.0}, 0.004, {"malignant": 180.0, "benign": 320.0})
ERRORING = VersionNumbers(
    {"ok": 300.0, "invalid": 200.0}, 0.004, {"malignant": 110.0, "benign": 190.0}
)
QUIET = VersionNumbers({"ok": 3.0}, 0.004, {"malignant": 1.0, "benign": 2.0})


@dataclass
class CannedPrometheus:
    numbers: dict[str, VersionNumbers]
    queries: list[str] = field(default_factory=list)
    url: str = ""
    garbage: Any = None
    """When set, the whole answer to every query: JSON-encoded, or sent as is if bytes."""

    def answer(self, expr: str) -> list[dict[str, Any]]:
        found = _VERSION.search(expr)
        numbers = self.numbers.get(found.group(1)) if found else None
        if numbers is None or "inference_feature" in expr:
            return []  # no drift profile counted: the analysis reports input drift unmeasured
        if expr.startswith("histogram_quantile"):
            return [{"metric": {}, "value": [0, str(numbers.p99_seconds)]}]
        label, values = (
            ("outcome", numbers.outcomes)
            if "inference_requests_total" in expr
            else ("class_name", numbers.classes)
        )
        return [{"metric": {label: k}, "value": [0, str(v)]} for k, v in values.items()]

    @contextmanager
    def running(self) -> Iterator[CannedPrometheus]:
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                split = urlsplit(self.path)
                expr = parse_qs(split.query).get("query", [""])[0]
                canned.queries.append(expr)
                payload = {
                    "status": "success",
                    "data": {"resultType": "vector", "result": canned.answer(expr)},
                }
                if canned.garbage is not None:
                    payload = canned.garbage
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        with serving_http(Handler) as url:
            self.url = url
            yield self


def _vector(result: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


GARBAGE: dict[str, tuple[Any, str]] = {
    # name: (the whole answer to every query, what the one-line reason must say)
    "non-numeric value": (
        _vector([{"metric": {}, "value": [0, "lots"]}]),
        "'lots' is not a number",
    ),
    "null value": (_vector([{"metric": {}, "value": [0, None]}]), "None is not a number string"),
    "bool value": (_vector([{"metric": {}, "value": [0, True]}]), "True is not a number string"),
    "short value": (_vector([{"metric": {}, "value": [0]}]), "`value` is [0], not [time"),
    "data a string": ({"status": "success", "data": "vector"}, "`data` is 'vector', not an object"),
    "data a list": ({"status": "success", "data": []}, "`data` is [], not an object"),
    "result an object": (_vector({"ok": 1}), "`result` is {'ok': 1}, not a list"),
    "item a string": (_vector(["ok"]), "a result item is 'ok', not an object"),
    "metric a list": (_vector([{"metric": ["a"], "value": [0, "1"]}]), "`metric` is ['a']"),
    "matrix": (
        {"status": "success", "data": {"resultType": "matrix", "result": []}},
        "resultType is 'matrix', not 'vector'",
    ),
    "not json": (b"<html>proxy error</html>", "<html>proxy error</html>"),
    "overflowing count": (
        _vector([{"metric": {"outcome": "ok"}, "value": [0, "1e308"]}]),
        "the count 1e+308",
    ),
    "infinite count": (
        _vector([{"metric": {"outcome": "error"}, "value": [0, "+Inf"]}]),
        "the count inf",
    ),
}
