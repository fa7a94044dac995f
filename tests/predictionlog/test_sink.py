"""The sink against a real PostgreSQL, over HTTP, as KServe's logger talks to it."""

from __future__ import annotations

import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import requests

from tests.predictionlog.events import (
    REQUEST,
    RESPONSE,
    headers,
    metric,
    post,
    rows,
    v2_request,
    v2_response,
)
from tests.support import (
    REPO_ROOT,
    RunningSink,
    free_port,
    start_process,
    wait_http_ok,
    wait_until,
)

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("first", [REQUEST, RESPONSE])
def test_either_order_of_request_and_response_makes_one_complete_row(
    sink: RunningSink, first: str
) -> None:
    version, event_id = unique("order"), unique("id")
    sent = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
    events = {
        REQUEST: (v2_request(), sent),
        RESPONSE: (v2_response(version), sent + timedelta(milliseconds=25)),
    }
    second = RESPONSE if first == REQUEST else REQUEST
    with requests.Session() as session:
        answers = [
            post(session, sink.url, event_id, kind, *events[kind]) for kind in (first, second)
        ]

    assert [a.status_code for a in answers] == [200, 200]
    [row] = rows(sink.database_url, "id = %s", (event_id,))
    assert (row["model_name"], row["model_version"]) == ("breast-cancer", version)
    assert (row["request"], row["response"]) == (v2_request(), v2_response(version))
    assert (row["request_time"], row["response_time"], row["logged_at"]) == (
        sent,
        sent + timedelta(milliseconds=25),
        sent,
    )
    assert row["latency_seconds"] == pytest.approx(0.025)
    assert (row["inference_service"], row["namespace"], row["endpoint"]) == (
        "breast-cancer",
        "mlops",
        "default",
    )


def test_the_same_event_delivered_twice_is_stored_once(sink: RunningSink) -> None:
    event_id = unique("twice")
    with requests.Session() as session:
        for _ in range(2):
            assert post(session, sink.url, event_id, REQUEST, v2_request()).status_code == 200
    assert len(rows(sink.database_url, "id = %s", (event_id,))) == 1


def test_a_burst_of_a_thousand_events_is_stored_completely(sink: RunningSink) -> None:
    version = unique("burst")
    ids = [unique("b") for _ in range(500)]
    jobs = [(i, REQUEST, v2_request()) for i in ids] + [
        (i, RESPONSE, v2_response(version)) for i in ids
    ]
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=16)
    session.mount("http://", adapter)
    with session, ThreadPoolExecutor(16) as pool:
        statuses = list(
            pool.map(lambda job: post(session, sink.url, *job).status_code, jobs, timeout=120)
        )

    assert statuses == [200] * 1000
    stored = rows(sink.database_url, "model_version = %s", (version,))
    assert sorted(r["id"] for r in stored) == sorted(ids)
    assert all(r["request"] is not None and r["response"] is not None for r in stored)


MALFORMED = {
    "no ce-id": ({"ce-id": ""}, b'{"inputs": []}'),
    "unknown type": ({"ce-type": "com.example.other"}, b'{"inputs": []}'),
    "not JSON": ({}, b"\x00\x01binary"),
    "a JSON array": ({}, b"[1, 2, 3]"),
    "no data": ({}, b""),
    "a bad time": ({"ce-time": "yesterday"}, b'{"inputs": []}'),
    "no specversion": ({"ce-specversion": None}, b'{"inputs": []}'),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_event_is_refused_counted_and_not_stored(sink: RunningSink, case: str) -> None:
    changes, body = MALFORMED[case]
    event_id = unique("bad")
    sent = {**headers(event_id, REQUEST), **changes}
    sent = {k: v for k, v in sent.items() if v is not None}
    before = metric(
        requests.get(f"{sink.url}/metrics", timeout=10).text,
        "predictionlog_events_total",
        outcome="invalid",
    )

    answer = requests.post(f"{sink.url}/", data=body, headers=sent, timeout=10)

    assert answer.status_code == 400
    assert set(answer.json()) == {"error"}
    after = metric(
        requests.get(f"{sink.url}/metrics", timeout=10).text,
        "predictionlog_events_total",
        outcome="invalid",
    )
    assert after == before + 1
    assert rows(sink.database_url, "id = %s", (event_id,)) == []
    # ... and the sink goes on storing good events.
    assert post(requests, sink.url, unique("good"), REQUEST, v2_request()).status_code == 200


def test_an_event_above_the_body_limit_is_refused_with_413(sink: RunningSink) -> None:
    huge = b'{"inputs": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    answer = requests.post(
        f"{sink.url}/", data=huge, headers=headers(unique("huge"), REQUEST), timeout=30
    )
    assert answer.status_code == 413
    assert "MAX_BODY_BYTES" in answer.json()["error"]


def test_history_pages_through_a_version_with_the_cursor(sink: RunningSink) -> None:
    version = unique("pages")
    start = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    ids = [f"{version}-{n:02d}" for n in range(5)]
    with requests.Session() as session:
        for n, event_id in enumerate(ids):
            at = start + timedelta(seconds=n)
            post(session, sink.url, event_id, REQUEST, v2_request(), at)
            post(session, sink.url, event_id, RESPONSE, v2_response(version), at)

    seen, cursor, pages = [], None, 0
    while True:
        params = {"model_version": version, "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = requests.get(f"{sink.url}/predictions", params=params, timeout=10)
        assert page.status_code == 200
        body = page.json()
        pages += 1
        seen += [p["id"] for p in body["predictions"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert (seen, pages) == (ids, 3)
    first = requests.get(
        f"{sink.url}/predictions",
        params={"model_version": version, "since": (start + timedelta(seconds=3)).isoformat()},
        timeout=10,
    ).json()["predictions"]
    assert [p["id"] for p in first] == ids[3:]
    assert first[0]["response"] == v2_response(version)
    assert first[0]["request"] == v2_request()
    assert first[0]["latency_seconds"] == 0.0


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"limit": "0"}, "1 to 1000"),
        ({"limit": "1001"}, "1 to 1000"),
        ({"limit": "ten"}, "whole number"),
        ({"since": "last week"}, "ISO 8601"),
        ({"cursor": "not-a-cursor"}, "next_cursor"),
        ({"model": "x"}, "unknown parameter"),
    ],
)
def test_history_refuses_bad_parameters(
    sink: RunningSink, params: dict[str, str], words: str
) -> None:
    answer = requests.get(f"{sink.url}/predictions", params=params, timeout=10)
    assert answer.status_code == 400
    assert words in answer.json()["error"]


def test_retention_deletes_only_rows_older_than_the_setting(sink: RunningSink) -> None:
    old, recent = unique("old"), unique("recent")
    now = datetime.now(UTC)
    with requests.Session() as session:
        post(session, sink.url, old, REQUEST, v2_request(), now - timedelta(days=31))
        post(session, sink.url, recent, REQUEST, v2_request(), now - timedelta(days=29))

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "predictionlog",
            "prune",
            "--retention-days",
            "30",
            "--retention-batch-rows",
            "1",
        ],
        env={"DATABASE_URL": sink.database_url, "PATH": ""},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    remaining = {r["id"] for r in rows(sink.database_url, "id = ANY(%s)", ([old, recent],))}
    assert remaining == {recent}
    assert rows(sink.database_url, "logged_at < %s", (now - timedelta(days=30),)) == []


def test_ready_and_alive(sink: RunningSink) -> None:
    assert requests.get(f"{sink.url}/readyz", timeout=10).json() == {"status": "ready"}
    assert requests.get(f"{sink.url}/healthz", timeout=10).json() == {"status": "alive"}


def batch(*events: tuple[str, str, dict[str, Any]]) -> bytes:
    """Structured events in the HTTP binding's batched mode, as the predictor sends them."""
    return orjson.dumps(
        [
            {
                "specversion": "1.0",
                "id": event_id,
                "type": kind,
                "source": "predictor",
                "time": "2026-12-01T11:00:00Z",
                "datacontenttype": "application/json",
                "data": body,
            }
            for event_id, kind, body in events
        ]
    )


BATCH = {"content-type": "application/cloudevents-batch+json"}


def test_a_batch_of_events_is_stored_whole(sink: RunningSink) -> None:
    version, event_id = unique("batch"), unique("id")
    body = batch((event_id, RESPONSE, v2_response(version)), (event_id, REQUEST, v2_request()))
    answer = requests.post(f"{sink.url}/", data=body, headers=BATCH, timeout=10)
    assert (answer.status_code, answer.json()) == (200, {"stored": 2})
    [row] = rows(sink.database_url, "id = %s", (event_id,))
    assert (row["model_version"], row["request"]) == (version, v2_request())


def test_a_batch_with_one_bad_event_is_refused_whole(sink: RunningSink) -> None:
    good, bad = unique("good"), unique("bad")
    body = batch((good, REQUEST, v2_request()), (bad, "com.example.other", v2_request()))
    answer = requests.post(f"{sink.url}/", data=body, headers=BATCH, timeout=10)
    assert answer.status_code == 400
    assert "event 1 of the batch" in answer.json()["error"]
    assert rows(sink.database_url, "id = ANY(%s)", ([good, bad],)) == []


def test_the_sink_applies_the_retention_itself_on_its_interval(
    postgresql_url: str, tmp_path: Path
) -> None:
    """A sink of its own, in a schema of its own (migrated on start), with a short
    retention interval: the old row goes without any command, the recent one stays."""
    port = free_port()
    process = start_process(
        [sys.executable, "-m", "predictionlog", "--host", "127.0.0.1", "--http-port", str(port)],
        tmp_path / "sink.log",
        env={
            "DATABASE_URL": postgresql_url,
            "DATABASE_SCHEMA": "retention_loop",
            "RETENTION_DAYS": "30",
            "RETENTION_INTERVAL_SECONDS": "0.5",
        },
    )
    url = f"http://127.0.0.1:{port}"
    now = datetime.now(UTC)
    try:
        wait_http_ok(process, f"{url}/readyz", 60, "the second sink")
        with requests.Session() as session:
            assert post(session, url, "old", REQUEST, v2_request(), now - timedelta(days=31)).ok
            assert post(session, url, "new", REQUEST, v2_request(), now - timedelta(days=1)).ok

        def remaining() -> set[str]:
            with psycopg.connect(postgresql_url) as conn:
                found = conn.execute("SELECT id FROM retention_loop.predictions").fetchall()
            return {row[0] for row in found}

        wait_until(lambda: remaining() == {"new"}, 30, "the retention run")
        deleted = metric(
            requests.get(f"{url}/metrics", timeout=10).text,
            "predictionlog_retention_deleted_rows_total",
        )
    finally:
        process.stop()
    assert deleted >= 1


def test_without_its_database_the_sink_stays_alive_not_ready_and_refuses_with_503(
    tmp_path: Path,
) -> None:
    port = free_port()
    process = start_process(
        [sys.executable, "-m", "predictionlog", "--host", "127.0.0.1", "--http-port", str(port)],
        tmp_path / "sink.log",
        env={"DATABASE_URL": f"postgresql://mlops@127.0.0.1:{free_port()}/mlops"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(process, f"{url}/healthz", 60, "the sink to listen")
        ready = requests.get(f"{url}/readyz", timeout=10)
        answer = post(requests, url, unique("away"), REQUEST, v2_request())
        history = requests.get(f"{url}/predictions", timeout=10)
        # The log says what it waits for (after the pool's 5 s connection timeout).
        wait_until(lambda: "database not reachable yet" in process.log(), 30, "the log line")
    finally:
        process.stop()
    assert ready.status_code == 503
    assert (answer.status_code, history.status_code) == (503, 503)
    assert "not reachable" in answer.json()["error"]
