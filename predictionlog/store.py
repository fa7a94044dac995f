"""The prediction log's table in PostgreSQL: migrations, batched upserts, pages, retention.

One row per exchange (`ce-id`): the request and the response events fill their own
columns, whichever comes first, so both orders make the same row. psycopg 3's async
pool holds the connections; `executemany` sends a batch as one pipeline.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from predictionlog.errors import ConfigError
from predictionlog.events import LogEvent

logger = logging.getLogger(__name__)

TABLE = "predictions"
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# Each migration runs once, in order, in one transaction with the others of its start,
# under an advisory lock (two replicas starting together must not race on CREATE).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE {table} (
        id text PRIMARY KEY,
        model_name text,
        model_version text,
        inference_service text,
        namespace text,
        component text,
        endpoint text,
        source text,
        request jsonb,
        response jsonb,
        request_time timestamptz,
        response_time timestamptz,
        -- when the exchange happened: the request's time, or the response's until it comes
        logged_at timestamptz GENERATED ALWAYS AS (coalesce(request_time, response_time)) STORED,
        latency_seconds double precision
            GENERATED ALWAYS AS (extract(epoch FROM response_time - request_time)) STORED
    );
    CREATE INDEX predictions_logged_at ON {table} (logged_at, id);
    CREATE INDEX predictions_version_logged_at ON {table} (model_version, logged_at, id);
    """,
)

_COLUMNS = (
    "id",
    "model_name",
    "model_version",
    "inference_service",
    "namespace",
    "component",
    "endpoint",
    "source",
    "request",
    "response",
    "request_time",
    "response_time",
)
# What a second event of the same id adds: its own half, and what the first lacked.
_UPSERT = """
INSERT INTO {table} AS p ({columns})
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s)
ON CONFLICT (id) DO UPDATE SET
    model_name = coalesce(excluded.model_name, p.model_name),
    model_version = coalesce(excluded.model_version, p.model_version),
    inference_service = coalesce(p.inference_service, excluded.inference_service),
    namespace = coalesce(p.namespace, excluded.namespace),
    component = coalesce(p.component, excluded.component),
    endpoint = coalesce(p.endpoint, excluded.endpoint),
    source = coalesce(p.source, excluded.source),
    request = coalesce(excluded.request, p.request),
    response = coalesce(excluded.response, p.response),
    request_time = coalesce(excluded.request_time, p.request_time),
    response_time = coalesce(excluded.response_time, p.response_time)
"""


def connection_url(url: str) -> str:
    """A libpq URL; SQLAlchemy's `postgresql+psycopg://` (MLflow's spelling) works too."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.startswith(("postgresql+", "postgres+")):
        return f"postgresql://{rest}"
    return url


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ConfigError(
            f"DATABASE_SCHEMA {schema!r} must be a lower-case SQL name (letters, digits, _), "
            "e.g. predictionlog"
        )
    return schema


@dataclass(frozen=True)
class Row:
    """One exchange as the history API returns it; `request`/`response` are JSON text."""

    id: str
    model_name: str | None
    model_version: str | None
    inference_service: str | None
    namespace: str | None
    component: str | None
    endpoint: str | None
    request: str | None
    response: str | None
    request_time: datetime | None
    response_time: datetime | None
    latency_seconds: float | None
    logged_at: datetime


def merged(events: Iterable[LogEvent]) -> list[tuple[Any, ...]]:
    """Upsert parameters, one per id, in id order: a batch holding both halves of an
    exchange writes one row, and two batches written at once lock their rows in the same
    order (no deadlock between the writers)."""
    rows: dict[str, dict[str, Any]] = {}
    for event in events:
        row = rows.setdefault(event.id, dict.fromkeys(_COLUMNS))
        row["id"] = event.id
        for field in ("inference_service", "namespace", "component", "endpoint", "source"):
            row[field] = row[field] or getattr(event, field)
        half = "request" if event.is_request else "response"
        row[half] = event.payload.decode()
        row[f"{half}_time"] = event.time
        if not event.is_request:
            row["model_name"] = event.model_name
            row["model_version"] = event.model_version
    return [tuple(rows[key][c] for c in _COLUMNS) for key in sorted(rows)]


class Store:
    def __init__(
        self, url: str, schema: str, pool_max_size: int = 4, synchronous_commit: str = "on"
    ) -> None:
        self.schema = check_schema_name(schema)
        self.table = sql.Identifier(schema, TABLE)
        self.pool = AsyncConnectionPool(
            connection_url(url),
            min_size=1,
            max_size=pool_max_size,
            open=False,
            # A dead server must not leave a request waiting for the pool's 30 s default.
            timeout=5.0,
            kwargs={
                "connect_timeout": 5,
                "options": f"-c synchronous_commit={synchronous_commit}",
            },
        )
        self._upsert = sql.SQL(_UPSERT).format(
            table=self.table, columns=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
        )

    async def open(self) -> None:
        """Open the pool without waiting: the database may come up after the sink."""
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    async def migrate(self) -> int:
        """Create the schema and apply the migrations not applied yet; how many ran."""
        schema = sql.Identifier(self.schema)
        versions = sql.Identifier(self.schema, "schema_migrations")
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self.schema}.migrate",)
            )
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} "
                    "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(versions)
            )
            cursor = await conn.execute(sql.SQL("SELECT version FROM {}").format(versions))
            done = {row[0] for row in await cursor.fetchall()}
            applied = 0
            for version, statement in enumerate(MIGRATIONS, start=1):
                if version in done:
                    continue
                await conn.execute(sql.SQL(statement).format(table=self.table))  # type: ignore[arg-type]
                await conn.execute(
                    sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(versions), (version,)
                )
                applied += 1
        if applied:
            logger.info("schema %s: applied %d migration(s)", self.schema, applied)
        return applied

    async def ping(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("SELECT 1")

    async def write(self, events: Sequence[LogEvent]) -> int:
        """Upsert a batch in one transaction; the number of rows it touched."""
        params = merged(events)
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            await cursor.executemany(self._upsert, params)
        return len(params)

    async def page(
        self,
        limit: int,
        model_version: str | None = None,
        since: datetime | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[Row]:
        """Up to `limit` rows in (logged_at, id) order, after the keyset `after`."""
        conditions: list[sql.Composable] = []
        params: list[Any] = []
        if model_version is not None:
            conditions.append(sql.SQL("model_version = %s"))
            params.append(model_version)
        if since is not None:
            conditions.append(sql.SQL("logged_at >= %s"))
            params.append(since)
        if after is not None:
            conditions.append(sql.SQL("(logged_at, id) > (%s, %s)"))
            params.extend(after)
        where = sql.SQL("WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
        query = sql.SQL(
            "SELECT id, model_name, model_version, inference_service, namespace, component, "
            "endpoint, request::text AS request, response::text AS response, request_time, "
            "response_time, latency_seconds, logged_at FROM {table} {where} "
            "ORDER BY logged_at, id LIMIT %s"
        ).format(table=self.table, where=where)
        async with self.pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(query, [*params, limit])
            return [Row(**row) for row in await cursor.fetchall()]

    async def prune(self, before: datetime, batch_rows: int) -> int:
        """Delete rows logged before `before`, `batch_rows` per transaction (short locks,
        bounded WAL per commit); how many in all."""
        statement = sql.SQL(
            "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE logged_at < %s "
            "ORDER BY logged_at LIMIT %s FOR UPDATE SKIP LOCKED)"
        ).format(table=self.table)
        total = 0
        while True:
            async with self.pool.connection() as conn, conn.transaction():
                cursor = await conn.execute(statement, (before, batch_rows))
                deleted = cursor.rowcount
            total += deleted
            if deleted < batch_rows:
                return total


def is_data_error(error: BaseException) -> bool:
    """A batch refused for what one of its events holds (not the database being away)."""
    return isinstance(error, psycopg.errors.DataError | psycopg.errors.IntegrityError)
