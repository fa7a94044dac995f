"""The InferenceService's URL, locally: each request goes to a revision by the traffic split.

Knative's ingress picks a revision per request, weighted by the route's percents; this
router does the same for HTTP (starlette + one pooled httpx client; bodies streamed both
ways, so a large batch is never held whole). A revision whose process is down answers 503
with a JSON error saying which revision and why, as Knative's activator answers when a
revision has no ready pod.

gRPC: the router's gRPC port splits per CONNECTION (a TCP relay to one revision's gRPC
port, chosen by the same weights), not per request as Knative's HTTP/2 routing does: a
client that keeps one channel open stays on one revision. Each revision's own gRPC port
is in `/.local-serving/routes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

# Hop-by-hop headers (RFC 9110 section 7.6.1) are the connection's, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
OWN_PREFIX = "/.local-serving"
"""The router's own endpoints (health, the current routes); everything else is proxied."""


@dataclass(frozen=True)
class Backend:
    """Where one traffic target's requests go right now."""

    revision: str
    percent: int
    http_url: str | None
    """None while the revision has no ready process (requests get a 503)."""
    grpc_port: int | None
    down_reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "percent": self.percent,
            "url": self.http_url,
            "grpc_port": self.grpc_port,
            "down": self.down_reason or None,
        }


class RouteTable:
    """The backends of the current split; replaced whole by the reconciler (one reference
    assignment, so the router never sees half an update)."""

    def __init__(self) -> None:
        self.backends: tuple[Backend, ...] = ()
        self.not_ready_reason = "no revision is ready yet"
        self.synced = False
        """Set after the first reconcile: until then the status may be an old run's."""

    def pick(self, rng: random.Random) -> Backend | None:
        backends = [b for b in self.backends if b.percent > 0]
        if not backends:
            return None
        return rng.choices(backends, weights=[b.percent for b in backends])[0]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_app(table: RouteTable, timeout: float = 60.0, seed: int | None = None) -> Starlette:
    rng = random.Random(seed)
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=2.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    )

    async def health(request: Request) -> Response:
        if not table.synced:
            return _error(503, "the first reconcile has not finished yet")
        return JSONResponse({"status": "alive"})

    async def routes(request: Request) -> Response:
        return JSONResponse({"backends": [b.to_json() for b in table.backends]})

    async def proxy(request: Request) -> Response:
        backend = table.pick(rng)
        if backend is None:
            return _error(503, f"the InferenceService has no route: {table.not_ready_reason}")
        if backend.http_url is None:
            return _error(503, f"revision {backend.revision} is not serving: {backend.down_reason}")
        url = httpx.URL(backend.http_url + request.url.path, query=request.url.query.encode())
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        upstream = client.build_request(
            request.method, url, headers=headers, content=request.stream()
        )
        try:
            answer = await client.send(upstream, stream=True)
        except httpx.HTTPError as e:
            return _error(503, f"revision {backend.revision} did not answer: {e!r}")
        out_headers = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers=out_headers,
            background=BackgroundTask(answer.aclose),
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    return Starlette(
        routes=[
            Route(f"{OWN_PREFIX}/healthz", health),
            Route(f"{OWN_PREFIX}/routes", routes),
            Route("/{path:path}", proxy, methods=methods),
        ],
        lifespan=lifespan,
    )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, RuntimeError):
            writer.close()


async def serve_grpc_relay(
    table: RouteTable, host: str, port: int, seed: int | None = None
) -> asyncio.Server:
    """A TCP relay choosing one revision's gRPC port per connection, by the split."""
    rng = random.Random(seed)

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = table.pick(rng)
        if backend is None or backend.grpc_port is None or backend.http_url is None:
            writer.close()  # gRPC clients see UNAVAILABLE, as with no ready endpoint
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend.grpc_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return await asyncio.start_server(relay, host, port)
