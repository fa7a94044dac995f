"""`GET /predictions`: the query parameters, and the keyset cursor between pages.

Rows come oldest first in (logged_at, id) order. A page ends with `next_cursor`, which
names the last row returned; the next page starts after it, so rows logged meanwhile are
neither skipped nor repeated (an offset would do both).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from predictionlog.errors import InvalidQuery
from predictionlog.store import Row

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
"""The hard maximum of `limit`: a page is built in memory, and a larger one is refused."""
PARAMETERS = ("model_version", "since", "limit", "cursor")


@dataclass(frozen=True)
class Query:
    limit: int = DEFAULT_LIMIT
    model_version: str | None = None
    since: datetime | None = None
    after: tuple[datetime, str] | None = None


def parse_query(params: Mapping[str, str]) -> Query:
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise InvalidQuery(
            f"unknown parameter(s) {', '.join(unknown)}; the parameters are {', '.join(PARAMETERS)}"
        )
    return Query(
        limit=_limit(params.get("limit")),
        model_version=params.get("model_version") or None,
        since=_since(params.get("since")),
        after=decode_cursor(params["cursor"]) if params.get("cursor") else None,
    )


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError as e:
        raise InvalidQuery(f"limit {raw[:40]!r} is not a whole number (1 to {MAX_LIMIT})") from e
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(
            f"limit {limit} is out of range: 1 to {MAX_LIMIT} rows per page; "
            "follow next_cursor for more"
        )
    return limit


def _since(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        since = datetime.fromisoformat(raw)
    except ValueError as e:
        raise InvalidQuery(
            f"since {raw[:64]!r} is not an ISO 8601 time, e.g. 2026-12-01T10:00:00Z"
        ) from e
    return since if since.tzinfo else since.replace(tzinfo=UTC)


def encode_cursor(row: Row) -> str:
    key = [row.logged_at.isoformat(), row.id]
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        logged_at, row_id = orjson.loads(raw)
        return datetime.fromisoformat(logged_at), str(row_id)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError) as e:
        raise InvalidQuery(
            "cursor is not one this server gave out; pass next_cursor of the previous page as it is"
        ) from e


def page_body(rows: list[Row], limit: int) -> bytes:
    """The JSON page; `rows` holds up to `limit + 1` rows, the extra one says whether
    another page follows."""
    shown = rows[:limit]
    more = len(rows) > limit
    body: dict[str, Any] = {
        "predictions": [_as_json(row) for row in shown],
        "next_cursor": encode_cursor(shown[-1]) if more else None,
    }
    return orjson.dumps(body)


def _as_json(row: Row) -> dict[str, Any]:
    return {
        "id": row.id,
        "model_name": row.model_name,
        "model_version": row.model_version,
        "inference_service": row.inference_service,
        "namespace": row.namespace,
        "component": row.component,
        "endpoint": row.endpoint,
        "time": row.logged_at,
        "request_time": row.request_time,
        "response_time": row.response_time,
        "latency_seconds": row.latency_seconds,
        # Stored JSON, passed through as it is rather than parsed and written again.
        "request": None if row.request is None else orjson.Fragment(row.request),
        "response": None if row.response is None else orjson.Fragment(row.response),
    }
