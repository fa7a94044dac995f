"""Parsing payload-logger CloudEvents (no server)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from predictionlog import events
from predictionlog.errors import InvalidEvent
from tests.predictionlog.events import REQUEST, RESPONSE, headers, v2_response


def test_a_binary_response_event_as_kserve_sends_it() -> None:
    sent = headers("abc", RESPONSE)
    sent["ce-time"] = "2026-12-01T10:00:00.123456789Z"  # Go's RFC 3339 with nanoseconds
    event = events.parse(sent, orjson.dumps(v2_response("7")))
    assert (event.id, event.is_request, event.model_version, event.model_name) == (
        "abc",
        False,
        "7",
        "breast-cancer",
    )
    assert event.time == datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert (event.inference_service, event.namespace, event.component, event.endpoint) == (
        "breast-cancer",
        "mlops",
        "predictor",
        "default",
    )


def test_a_structured_event_is_read_too() -> None:
    body = {
        "specversion": "1.0",
        "id": "s-1",
        "type": REQUEST,
        "source": "test",
        "time": "2026-12-01T10:00:00Z",
        "data": {"inputs": []},
    }
    event = events.parse({"content-type": "application/cloudevents+json"}, orjson.dumps(body))
    assert (event.id, event.is_request, event.body) == ("s-1", True, {"inputs": []})


def test_a_nul_escape_is_refused_before_the_database_sees_it() -> None:
    with pytest.raises(InvalidEvent, match="u0000"):
        events.parse(headers("n", REQUEST), b'{"inputs": "\\u0000"}')
