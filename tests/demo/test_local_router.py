"""The router of the local InferenceService URL (demo/local_router.py), in-process: a real
upstream HTTP server for the proxied path, and the 503s of a revision that is down."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from starlette.testclient import TestClient

from demo.local_router import Backend, RouteTable, build_app
from tests.support import free_port, serving_http


class Echo(BaseHTTPRequestHandler):
    """Answers with what it got: method, path, query, body and one header."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        answer = json.dumps(
            {"path": self.path, "body": body.decode(), "header": self.headers.get("x-test")}
        ).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def table() -> RouteTable:
    return RouteTable()


@pytest.fixture
def client(table: RouteTable) -> Iterator[TestClient]:
    with TestClient(build_app(table, seed=1)) as test_client:
        yield test_client


def test_a_request_is_proxied_with_its_path_query_body_and_headers(
    table: RouteTable, client: TestClient
) -> None:
    with serving_http(Echo) as url:
        table.backends = (Backend("r-00001", 100, url, None),)
        response = client.post("/v2/models/m/infer?x=1", content=b'{"a": 1}',
                               headers={"x-test": "kept"})  # fmt: skip
    assert response.status_code == 201
    assert response.json() == {"path": "/v2/models/m/infer?x=1", "body": '{"a": 1}',
                               "header": "kept"}  # fmt: skip


def test_the_split_follows_the_percents_and_a_down_revision_answers_503(
    table: RouteTable, client: TestClient
) -> None:
    with serving_http(Echo) as url:
        table.backends = (
            Backend("r-00001", 80, url, None),
            Backend("r-00002", 20, None, None, "its predictor is not ready"),
        )
        codes = Counter(client.post("/v2/models/m/infer", content=b"{}").status_code
                        for _ in range(200))  # fmt: skip
        down = client.post("/v2/models/m/infer", content=b"{}")
        while down.status_code != 503:
            down = client.post("/v2/models/m/infer", content=b"{}")
    # Binomial(200, 0.2): mean 40, sd 5.7; 15..65 is beyond 4 sd either side.
    assert 15 <= codes[503] <= 65 and codes[201] + codes[503] == 200, codes
    assert down.json() == {"error": "revision r-00002 is not serving: its predictor is not ready"}


def test_no_route_and_an_unreachable_revision_answer_503_with_a_json_error(
    table: RouteTable, client: TestClient
) -> None:
    table.not_ready_reason = "revision x-00001 is not ready yet"
    response = client.get("/v2/health/ready")
    assert response.status_code == 503
    assert "no route: revision x-00001 is not ready yet" in response.json()["error"]

    table.backends = (Backend("x-00001", 100, f"http://127.0.0.1:{free_port()}", None),)
    response = client.get("/v2/health/ready")
    assert response.status_code == 503
    assert response.json()["error"].startswith("revision x-00001 did not answer")


def test_the_router_s_own_endpoints_answer_without_a_revision(
    table: RouteTable, client: TestClient
) -> None:
    # Healthy once the first reconcile wrote a fresh status (an old run's may be stale).
    assert client.get("/.local-serving/healthz").status_code == 503
    table.synced = True
    assert client.get("/.local-serving/healthz").json() == {"status": "alive"}
    table.backends = (Backend("x-00001", 100, None, 9, "starting"),)
    assert client.get("/.local-serving/routes").json() == {
        "backends": [{"revision": "x-00001", "percent": 100, "url": None, "grpc_port": 9,
                      "down": "starting"}]
    }  # fmt: skip
