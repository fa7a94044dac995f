"""KServe's payload-logger CloudEvents, parsed with the `cloudevents` SDK.

What KServe's agent sends (kserve/kserve `pkg/logger/handler.go` and `worker.go`, read for
0.21): for every proxied request, one event of type `org.kubeflow.serving.inference.request`
with the request body, and, if the predictor answered 200, one of type
`...inference.response` with the response body; both in binary mode (the body is the
event's data, the attributes are `ce-*` headers), with the same `ce-id` (the request's own
`Ce-Id` header, or a fresh UUID), `ce-source` (the agent's URL), `ce-time` (when the event
was sent), and the extensions `ce-inferenceservicename`, `ce-namespace`, `ce-component`,
`ce-endpoint` (`default` or `canary`) and `ce-metadata`. The response event carries the
request's Content-Type. Events are sent by a pool of workers, so the pair arrives in
either order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from cloudevents import exceptions as ce_errors
from cloudevents.http import CloudEvent, from_dict, from_http

from predictionlog.errors import InvalidEvent

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
EVENT_TYPES = (REQUEST_TYPE, RESPONSE_TYPE)
MAX_ID_LENGTH = 256
"""Longest `ce-id` kept; KServe's are UUIDs or a client's request id."""
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
MAX_BATCH_EVENTS = 1000


@dataclass(frozen=True)
class LogEvent:
    """One half of a logged exchange: the request or the response."""

    id: str
    is_request: bool
    time: datetime
    source: str
    body: dict[str, Any]
    payload: bytes
    """The body as JSON text, stored as it came."""
    inference_service: str | None = None
    namespace: str | None = None
    component: str | None = None
    endpoint: str | None = None

    @property
    def kind(self) -> str:
        return "request" if self.is_request else "response"

    @property
    def model_name(self) -> str | None:
        """The V2 response's `model_name` (V1 responses carry none)."""
        return _text_or_none(self.body.get("model_name")) if not self.is_request else None

    @property
    def model_version(self) -> str | None:
        """The V2 response's `model_version`: the registry version that answered."""
        return _text_or_none(self.body.get("model_version")) if not self.is_request else None


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _keep_raw(data: Any) -> Any:
    """The SDK's data unmarshaller: keep the bytes; the body is parsed once, below."""
    return data


def parse(headers: Mapping[str, str], body: bytes) -> LogEvent:
    """The event of one POST, or `InvalidEvent` saying what is wrong with it."""
    # Only the event's own headers: the SDK walks every header it is given (a third of
    # its time went on Host, User-Agent, Accept...).
    lowered = {
        k: v
        for k, v in ((k.lower(), v) for k, v in headers.items())
        if k.startswith("ce-") or k == "content-type"
    }
    binary = "ce-specversion" in lowered
    if binary and not lowered.get("ce-id"):
        # The SDK makes up an id when there is none: such an event could never be paired.
        raise InvalidEvent("the event has no ce-id header; KServe's logger sets one per request")
    try:
        event = from_http(lowered, body, data_unmarshaller=_keep_raw)
    except ce_errors.GenericException as e:
        raise InvalidEvent(
            f"not a CloudEvent ({e}); send a binary-mode event (ce-specversion, ce-id, "
            "ce-type, ce-source headers and the payload as the body) as KServe's logger does"
        ) from e
    return _log_event(event)


def is_batch(content_type: str | None) -> bool:
    return (content_type or "").partition(";")[0].strip().lower() == BATCH_CONTENT_TYPE


def parse_batch(body: bytes) -> list[LogEvent]:
    """The events of one POST in the CloudEvents HTTP binding's batched mode (a JSON array
    of structured events), which the predictor's own logger sends. All or nothing: one
    invalid event refuses the batch."""
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidEvent(f"the batch is not JSON ({e}); send a JSON array of events") from e
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_EVENTS:
        raise InvalidEvent(
            f"a batch must be a JSON array of 1 to {MAX_BATCH_EVENTS} structured CloudEvents"
        )
    events = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict) or not item.get("id"):
                raise InvalidEvent("not an event object with an id")
            events.append(_log_event(from_dict(item)))
        except ce_errors.GenericException as e:
            raise InvalidEvent(f"event {index} of the batch is not a CloudEvent ({e})") from e
        except InvalidEvent as e:
            raise InvalidEvent(f"event {index} of the batch: {e}; nothing was stored") from e
    return events


def _log_event(event: CloudEvent) -> LogEvent:
    event_type = event["type"]
    if event_type not in EVENT_TYPES:
        raise InvalidEvent(
            f"ce-type {str(event_type)[:100]!r} is not a payload-logger event; expected "
            f"{REQUEST_TYPE} or {RESPONSE_TYPE}"
        )
    event_id = str(event["id"])
    if not event_id or len(event_id) > MAX_ID_LENGTH:
        raise InvalidEvent(f"ce-id must be 1 to {MAX_ID_LENGTH} characters")
    attributes = event.get_attributes()
    parsed, payload = _payload(event.get_data())
    return LogEvent(
        id=event_id,
        is_request=event_type == REQUEST_TYPE,
        time=_event_time(attributes.get("time")),
        source=str(event["source"]),
        body=parsed,
        payload=payload,
        **{field: _text_or_none(attributes.get(name)) for field, name in _FIELDS.items()},
    )


_FIELDS = {
    "inference_service": "inferenceservicename",
    "namespace": "namespace",
    "component": "component",
    "endpoint": "endpoint",
}


def _event_time(value: Any) -> datetime:
    """`ce-time` (RFC 3339; Go's nanoseconds are cut to microseconds), in UTC."""
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value))
        except ValueError as e:
            raise InvalidEvent(
                f"ce-time {str(value)[:64]!r} is not an RFC 3339 time, e.g. 2026-12-01T10:00:00Z"
            ) from e
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _payload(data: Any) -> tuple[dict[str, Any], bytes]:
    """The logged body as a JSON object (V2 or V1, request or response), and as text."""
    if isinstance(data, dict):  # a structured-mode event carries it parsed
        data = orjson.dumps(data)
    if isinstance(data, str):
        data = data.encode()
    if not data:
        raise InvalidEvent("the event has no data; the body must be the logged JSON payload")
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise InvalidEvent(
            f"the event's data is not JSON ({e}); the sink stores JSON inference payloads "
            "(V2 or V1), not the binary tensor extension"
        ) from e
    if not isinstance(parsed, dict):
        raise InvalidEvent(
            f"the event's data is a JSON {type(parsed).__name__}; expected an object "
            "(a V2 or V1 inference request or response)"
        )
    if b"\\u0000" in data:
        # PostgreSQL's jsonb has no NUL character; refused here, not by a failed batch.
        raise InvalidEvent("the event's data holds a \\u0000 escape, which cannot be stored")
    return parsed, bytes(data)
