"""The sink's HTTP application (Starlette, run by uvicorn).

- `POST /`: one payload-logger CloudEvent (KServe's logger posts to the URL as given),
  or a batch of them (`application/cloudevents-batch+json`, as the predictor sends);
  200 once stored, 4xx `{"error": ...}` for an event that cannot be, 503 while the
  database is away. Nothing of a refused event is stored.
- `GET /predictions?model_version=&since=&limit=&cursor=`: the history, keyset-paged.
- `GET /healthz` (the process answers), `/readyz` (the database answers and the schema
  is in place), `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from predictionlog import events, history
from predictionlog.errors import EventTooLarge, InvalidEvent, PredictionLogError, StoreUnavailable
from predictionlog.metrics import SinkMetrics
from predictionlog.settings import Settings
from predictionlog.store import Store
from predictionlog.writer import BatchWriter

logger = logging.getLogger(__name__)
JSON = "application/json"
RETRY_SECONDS = (0.5, 1, 2, 5, 10)
"""Waits between attempts to reach the database at start (then every 10 s)."""


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


def error_response(error: PredictionLogError) -> Response:
    return json_response({"error": str(error)}, error.status)


class Sink:
    """The store, the batch writer, the retention loop and the routes over them."""

    def __init__(self, settings: Settings, metrics: SinkMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or SinkMetrics()
        self.store = Store(
            settings.database_url,
            settings.database_schema,
            settings.pool_max_size,
            settings.synchronous_commit,
        )
        self.writer = BatchWriter(
            self.store, self.metrics, settings.max_batch_events, settings.max_pending_events
        )
        self.migrated = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # --- life cycle ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.store.open()
        self.writer.start()
        self._tasks.append(asyncio.create_task(self._migrate(), name="migrate"))
        if self.settings.retention_days > 0:
            self._tasks.append(asyncio.create_task(self._retention_loop(), name="retention"))
        try:
            yield
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.writer.stop()
            await self.store.close()

    async def _migrate(self) -> None:
        """Create the schema once the database answers; not ready until then."""
        attempt = 0
        while True:
            try:
                await self.store.migrate()
            except Exception as e:
                wait = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                logger.warning("database not reachable yet (%s); retrying in %gs", e, wait)
                attempt += 1
                await asyncio.sleep(wait)
                continue
            self.migrated.set()
            logger.info("storing prediction logs in schema %s", self.settings.database_schema)
            return

    async def prune_once(self) -> int:
        before = datetime.now(UTC) - timedelta(days=self.settings.retention_days)
        deleted = await self.store.prune(before, self.settings.retention_batch_rows)
        self.metrics.pruned(deleted)
        logger.info("retention: deleted %d rows logged before %s", deleted, before.isoformat())
        return deleted

    async def _retention_loop(self) -> None:
        await self.migrated.wait()
        while True:
            try:
                await self.prune_once()
            except Exception as e:  # the database away: the next run tries again
                logger.warning("retention run failed: %s", e)
            await asyncio.sleep(self.settings.retention_interval_seconds)

    # --- routes -------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self.answered(self.receive), methods=["POST"]),
                Route("/predictions", self.answered(self.predictions), methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/metrics", self.metrics_page, methods=["GET"]),
            ],
            lifespan=self.lifespan,
        )

    @staticmethod
    def answered(
        endpoint: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """Every failure as one `{"error": ...}` answer; the server keeps serving."""

        async def answer(request: Request) -> Response:
            try:
                return await endpoint(request)
            except PredictionLogError as e:
                if e.status >= 500:
                    logger.warning("%s %s: %s", request.method, request.url.path, e)
                return error_response(e)
            except Exception:
                logger.exception("%s %s failed", request.method, request.url.path)
                return json_response({"error": "internal error; see the sink's log"}, 500)

        return answer

    async def receive(self, request: Request) -> Response:
        body = await self._body(request)
        batch = events.is_batch(request.headers.get("content-type"))
        try:
            received = events.parse_batch(body) if batch else [events.parse(request.headers, body)]
        except InvalidEvent:
            kind = "unknown" if batch else request.headers.get("ce-type", "")
            self.metrics.event(
                {events.REQUEST_TYPE: "request", events.RESPONSE_TYPE: "response"}.get(
                    kind, "unknown"
                ),
                "invalid",
            )
            raise
        if not self.migrated.is_set():
            for event in received:
                self.metrics.event(event.kind, "error")
            raise StoreUnavailable("the database is not reachable yet; retry later")
        await self.writer.submit(received)
        if batch:
            return json_response({"stored": len(received)})
        return json_response({"id": received[0].id, "stored": received[0].kind})

    async def _body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        too_large = EventTooLarge(
            f"the event is larger than this sink's limit of {limit} bytes (MAX_BODY_BYTES)"
        )
        if declared is not None and declared.isdigit() and int(declared) > limit:
            self.metrics.event("unknown", "invalid")
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                self.metrics.event("unknown", "invalid")
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    async def predictions(self, request: Request) -> Response:
        query = history.parse_query(request.query_params)
        if not self.migrated.is_set():
            raise StoreUnavailable("the database is not reachable yet; retry later")
        rows = await self.store.page(query.limit + 1, query.model_version, query.since, query.after)
        return Response(history.page_body(rows, query.limit), media_type=JSON)

    async def healthz(self, _request: Request) -> Response:
        return json_response({"status": "alive"})

    async def readyz(self, _request: Request) -> Response:
        if not self.migrated.is_set():
            return json_response({"error": "the database is not reachable yet"}, 503)
        try:
            await self.store.ping()
        except Exception as e:
            return json_response({"error": f"the database is not reachable ({e})"}, 503)
        return json_response({"status": "ready"})

    async def metrics_page(self, _request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)
