"""The REST side: KServe's FastAPI application with the predictor's own routes in front.

KServe keeps its server, health, V1 and model-ready routes; its model repository
extension (`/v2/repository/...`: load, unload, index) is not mounted, since this server
serves one model fixed at start and anyone who can reach the port could unload it. Ours
come first and take over what KServe does slowly or wrongly for this model:

- `POST /v2/models/{name}[/versions/{v}]/infer`: JSON, or the binary tensor extension,
  straight to a float64 matrix and back through `serving.codec` (KServe's generic path
  goes through pydantic, InferRequest and pandas); gzip and deflate bodies;
- `GET /v2` and `/v2/`: server metadata listing `binary_tensor_data` (KServe redirects
  `/v2/` and does not list it);
- `GET /v2/models/{name}[/versions/{v}]`: metadata with `versions` (KServe has none);
- `POST /v1/models/{name}:predict`: KServe's data plane, counted in our metrics.

KServe's per-request timing middleware and access log are left out (see `ACCESS_LOG`);
every failure is one `{"error": ...}` response and one log line.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter, time
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI
from kserve.protocol.rest.server import RESTServer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contract.metric_names import OK, REST, V1
from serving import codec
from serving.codec import binary
from serving.errors import (
    BodyTooLarge,
    ErrorInfo,
    InvalidRequest,
    RepositoryNotServed,
    UnsupportedMediaType,
    describe,
    log_failure,
    quoted,
)
from serving.http_protocol import protocol_class
from serving.metadata import PLATFORM
from serving.model import Active, RegistryModel
from serving.payload_logger import Exchange, PayloadLogger, request_id

JSON = "application/json"
T = TypeVar("T")
BINARY_EXTENSION = "binary_tensor_data"
"""The extension's name in `GET /v2`, as Triton's server metadata reports it."""
_DECOMPRESSORS = {"gzip": 31, "x-gzip": 31, "deflate": 15}  # zlib's wbits per encoding


OFF_LOOP_BYTES = 64 * 1024
"""Bodies above this are parsed and decoded off the event loop. A 4 MB body of arrays
nested 500 deep took 0.8-2 s to refuse; on the loop, three clients sending it kept
`/v2/health/ready` waiting 2.5-4.6 s, past the readiness probe's timeout."""


def check_structure(text: bytes, n_features: int, max_batch: int) -> None:
    """Refuse, before parsing, JSON with far more arrays, objects or values than a
    request of `max_batch` rows can hold. The parse is what costs (each array and object
    is a Python object the parser builds and the garbage collector walks; a 4 MB array of
    numbers is 200,000 floats), and it holds the GIL from start to end, in whatever
    thread it runs. A V2 body needs an array per row at most, a few per tensor, and a
    value per feature of each row; V1 likewise. Three byte counts, about a millisecond
    for 4 MB; brackets and commas inside strings count too: this is a bound, the parse
    that follows is exact."""
    allowed_nodes = 2 * max_batch + 8 * n_features + 64
    nodes = text.count(b"[") + text.count(b"{")
    allowed_values = max_batch * (n_features + 2) + 8 * n_features + 256
    values = text.count(b",") + 1
    if nodes > allowed_nodes or values > allowed_values:
        raise InvalidRequest(
            f"the request body holds {nodes} JSON arrays and objects and up to {values} values, "
            f"more than a request of at most {max_batch} rows of {n_features} features needs "
            f"({allowed_nodes} and {allowed_values}); send the rows as one 'features' tensor "
            f"of shape [N, {n_features}] (N <= {max_batch}), or one [N] tensor per column"
        )


def _check_media_type(content_type: str | None) -> None:
    """JSON, or the binary extension's octet stream (a body without a type is read as
    JSON, as V2 clients that send none expect)."""
    if content_type is None:
        return
    media = content_type.partition(";")[0].strip().lower()
    if media in (JSON, binary.OCTET_STREAM) or media.endswith("+json"):
        return
    raise UnsupportedMediaType(
        f"Content-Type {quoted(media)} is not an inference request; send {JSON}, or "
        f"{binary.OCTET_STREAM} with {binary.HEADER} for the binary tensor extension"
    )


def _decoded(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body after its Content-Encoding, decompressed to at most `limit` bytes (the
    body limit holds for what the request decompresses to, not only what it sent)."""
    if encoding is None or encoding.strip().lower() == "identity":
        return body
    wbits = _DECOMPRESSORS.get(encoding.strip().lower())
    if wbits is None:
        raise UnsupportedMediaType(
            f"Content-Encoding {quoted(encoding)} is not supported; send gzip, deflate or "
            "an uncompressed body"
        )
    decompressor = zlib.decompressobj(wbits)
    try:
        inflated = decompressor.decompress(body, limit + 1)
    except zlib.error as e:
        raise InvalidRequest(f"the body is not valid {encoding.strip()} data ({e})") from e
    if len(inflated) > limit:
        raise BodyTooLarge(
            f"the request body decompresses to more than this server's limit of {limit} "
            "bytes (MAX_BODY_BYTES); send fewer rows per request"
        )
    if not decompressor.eof:
        raise InvalidRequest(f"the {encoding.strip()} body ends before its compressed stream")
    return inflated


def error_response(info: ErrorInfo) -> Response:
    return JSONResponse(info.body(), status_code=info.status)


class BodyLimit:
    """Refuse bodies above `max_bytes` before reading them (413, `{"error": ...}`).

    A declared Content-Length is checked up front; a body without one (chunked) is
    counted as it streams in, and the read fails once it passes the limit.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, on_reject: Callable[[str, float], None]
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            # The HTTP parser never delivers more than a valid Content-Length.
            if declared.isdigit() and int(declared) > self.max_bytes:
                info = describe(self.too_large(f"{int(declared)} bytes"))
                log_failure(f"{scope['method']} {scope['path']}", info, BodyTooLarge(info.message))
                self.on_reject(scope["path"], perf_counter() - started)
                response = error_response(info)
                response.headers["connection"] = "close"  # the unread body stays unread
                await response(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return

        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self.too_large(f"more than {self.max_bytes} bytes")
            return message

        await self.app(scope, counted, send)

    def too_large(self, size: str) -> BodyTooLarge:
        return BodyTooLarge(
            f"the request body ({size}) exceeds this server's limit of {self.max_bytes} bytes "
            "(MAX_BODY_BYTES); send fewer rows per request"
        )


Endpoint = Callable[[Request], Awaitable[Response]]


class PredictorRoutes:
    """The routes in front of KServe's, bound to one `RegistryModel`."""

    def __init__(
        self,
        model: RegistryModel,
        dataplane: Any,
        max_body_bytes: int,
        payload_log: PayloadLogger | None = None,
    ) -> None:
        self.model = model
        self.dataplane = dataplane
        self.max_body_bytes = max_body_bytes
        self.payload_log = payload_log
        # One thread: large bodies are decoded one at a time, off the event loop, so a
        # few clients sending costly bodies queue behind each other while health checks
        # and small requests go on being answered.
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")

    async def off_loop(self, work: Callable[[], T], large: bool) -> T:
        """`work()` (parse, validate, decode a body): on the event loop when the body is
        small (a thread hop costs more than the parse), in the decoding thread when not."""
        if not large:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self._decoder, work)

    def routes(self) -> list[Route]:
        infer = self.answered(self.v2_infer, "V2 REST", REST)
        metadata = self.answered(self.v2_metadata, "V2 REST")
        return [
            Route("/v2/models/{model_name}/infer", infer, methods=["POST"]),
            Route(
                "/v2/models/{model_name}/versions/{model_version}/infer", infer, methods=["POST"]
            ),
            Route("/v2", self.answered(self.server_metadata, "V2 REST"), methods=["GET"]),
            Route("/v2/", self.answered(self.server_metadata, "V2 REST"), methods=["GET"]),
            Route("/v2/models/{model_name}", metadata, methods=["GET"]),
            Route("/v2/models/{model_name}/versions/{model_version}", metadata, methods=["GET"]),
            Route(
                "/v2/models/{model_name}/versions/{model_version}/ready",
                self.answered(self.v2_version_ready, "V2 REST"),
                methods=["GET"],
            ),
            Route(
                "/v1/models/{model_name}:predict",
                self.answered(self.v1_predict, "V1 REST", V1),
                methods=["POST"],
            ),
        ]

    def answered(self, endpoint: Endpoint, where: str, protocol: str | None = None) -> Endpoint:
        """`endpoint` with the failure policy: any exception becomes one `{"error": ...}`
        response and one log line; an inference route (`protocol`) is also counted."""
        model = self.model

        async def answer(request: Request) -> Response:
            started = perf_counter()
            try:
                response = await endpoint(request)
                outcome = OK
            except Exception as exc:
                info = describe(exc)
                log_failure(f"{where} {request.url.path}", info, exc)
                response = error_response(info)
                outcome = info.outcome
            if protocol is not None:
                # The loaded version's series (version "none" before a load).
                model.metrics.request(protocol, outcome, perf_counter() - started)
            return response

        return answer

    def _target(self, request: Request) -> Active:
        params = request.path_params
        return self.model.target(params["model_name"], params.get("model_version"))

    async def v2_infer(self, request: Request) -> Response:
        received = time() if self.payload_log is not None else 0.0
        model = self.model
        active = self._target(request)
        header_length = request.headers.get(binary.HEADER)
        _check_media_type(request.headers.get("content-type"))
        encoding = request.headers.get("content-encoding")
        body = await request.body()
        spec = active.model.spec

        def decode() -> tuple[codec.DecodedRequest, bytes]:
            inflated = _decoded(body, encoding, self.max_body_bytes)
            if header_length is None:
                text, raw = inflated, None
            else:
                text, raw = binary.split(inflated, header_length)
            check_structure(text, spec.n_features, model.max_batch_size)
            payload = codec.parse_json(text, spec)
            return codec.decode_v2(payload, spec, model.max_batch_size, raw), inflated

        decoded, inflated = await self.off_loop(
            decode, large=len(body) > OFF_LOOP_BYTES or bool(encoding)
        )
        prediction = model.infer(active, decoded.features)
        content, json_length = codec.encode_v2(
            prediction, decoded, model.name, active.model.version
        )
        if json_length is None:
            if self.payload_log is not None and header_length is None:
                answered = time()
                self.payload_log.log(
                    Exchange(request_id(request.headers), inflated, content, received, answered)
                )
            return Response(content, media_type=JSON)
        return Response(
            content,
            media_type=binary.OCTET_STREAM,
            headers={binary.HEADER: str(json_length)},
        )

    async def server_metadata(self, request: Request) -> Response:
        """KServe's server metadata, with the binary tensor extension it does not list;
        served at `/v2/` too (KServe's app redirects it)."""
        metadata = dict(self.dataplane.metadata())
        metadata["extensions"] = [*metadata.get("extensions", []), BINARY_EXTENSION]
        return JSONResponse(metadata)

    async def v2_metadata(self, request: Request) -> Response:
        loaded = self._target(request).model
        spec = loaded.spec
        return JSONResponse(
            {
                "name": self.model.name,
                "versions": [loaded.version],
                "platform": PLATFORM,
                "inputs": spec.inputs(),
                "outputs": spec.outputs(),
                "parameters": {
                    "model_uri": loaded.model_uri,
                    "run_id": loaded.run_id,
                    "feature_names": list(spec.feature_names or ()),
                    "class_names": list(spec.class_names),
                    "max_batch_size": self.model.max_batch_size,
                    "runtime": loaded.runtime,
                    "runtime_reason": loaded.runtime_reason,
                },
            }
        )

    async def v2_version_ready(self, request: Request) -> Response:
        """KServe answers 501 for a versioned ready check; this model has one version."""
        self._target(request)
        return JSONResponse({"name": self.model.name, "ready": True})

    async def v1_predict(self, request: Request) -> Response:
        """KServe's V1 route, through its data plane and `RegistryModel.predict`."""
        from kserve.errors import ModelNotReady

        name = request.path_params["model_name"]
        if not await self.dataplane.model_ready(name, True):
            raise ModelNotReady(name, f"waiting for {self.model.waiting_for}")
        body = await request.body()
        headers = dict(request.headers.items())
        spec = self.model.active().model.spec

        def decode() -> tuple[Any, Any]:
            check_structure(body, spec.n_features, self.model.max_batch_size)
            return self.dataplane.decode(body=body, headers=headers)  # type: ignore[no-any-return]

        decoded, attributes = await self.off_loop(decode, large=len(body) > OFF_LOOP_BYTES)
        result, response_headers = await self.dataplane.infer(
            model_name=name, request=decoded, headers=headers
        )
        result, extra_headers = self.dataplane.encode(
            model_name=name, response=result, headers=headers, req_attributes=attributes
        )
        response_headers.update(extra_headers)
        response_headers.pop("content-length", None)
        content = result if isinstance(result, bytes | str) else orjson.dumps(result)
        return Response(
            content,
            headers=response_headers,
            media_type=response_headers.pop("content-type", JSON),
        )


async def handle_error(request: Request, exc: Exception) -> Response:
    """For the routes KServe keeps: the same `{"error": ...}` shape and log policy."""
    info = describe(exc)
    log_failure(f"{request.method} {request.url.path}", info, exc)
    return error_response(info)


REPOSITORY_PREFIX = "/v2/repository"
REPOSITORY_PATH = REPOSITORY_PREFIX + "{rest:path}"
REPOSITORY_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


async def no_repository(request: Request) -> Response:
    return await handle_error(request, RepositoryNotServed())


def protocol_of(path: str) -> str | None:
    """The metrics protocol of an inference path, None for any other route."""
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return REST
    if path.startswith("/v1/models/") and path.endswith(":predict"):
        return V1
    return None


class PredictorRESTServer(RESTServer):  # type: ignore[misc]
    """KServe's REST server on an application of its own (not KServe's module-level
    one), with our routes first, our error handlers, and no per-request log lines."""

    def __init__(
        self,
        model: RegistryModel,
        dataplane: Any,
        model_repository_extension: Any,
        http_port: int,
        max_body_bytes: int,
        host: str | None = None,
        max_header_bytes: int = 32 * 1024,
        max_header_count: int = 100,
        drain_seconds: float = 2.0,
        access_log: bool = False,
        grace_period: int = 30,
        timeout_keep_alive: int = 65,
        event_loop: str = "auto",
        payload_log: PayloadLogger | None = None,
    ) -> None:
        self.model = model
        self.max_body_bytes = max_body_bytes
        self.payload_log = payload_log
        self.app = FastAPI(
            title="KServe ModelServer",
            docs_url=None,
            redoc_url=None,
            openapi_url=None,
            # FastAPI's native OpenTelemetry asks the global providers on every request
            # whether they are configured (~30 µs); the predictor's telemetry is Prometheus.
            telemetry={"tracing": False, "metrics": False, "logs": False},
        )
        super().__init__(
            self.app,
            dataplane,
            model_repository_extension,
            http_port,
            workers=1,
            grace_period=grace_period,
            timeout_keep_alive=timeout_keep_alive,
            event_loop=event_loop,
        )
        if host is not None:
            # Deviation from KServe, which always binds 0.0.0.0: `--host` applies.
            self.config.host = host
        # Deviations from uvicorn (a bounded request head, a draining shutdown): see there.
        self.config.http = protocol_class(max_header_bytes, max_header_count, drain_seconds)
        if not access_log:
            # What uvicorn does for access_log=False (KServe gives it no such option): a
            # logger without handlers makes uvicorn skip the access-log call entirely.
            access_logger = logging.getLogger("uvicorn.access")
            access_logger.handlers.clear()
            access_logger.propagate = False
        self._created = False

    def create_application(self) -> FastAPI:  # KServe calls this from start()
        if not self._created:
            self._add_middlewares(self.app)
            self._register_endpoints(self.app)
            self._add_exception_handlers(self.app)
            self._created = True
        return self.app

    def _add_middlewares(self, app: FastAPI) -> None:
        # KServe's TimingMiddleware is left out: it matches every route again and logs
        # two lines per request; inference_request_duration_seconds measures the same.
        app.add_middleware(BodyLimit, max_bytes=self.max_body_bytes, on_reject=self._rejected)

    def _rejected(self, path: str, seconds: float) -> None:
        protocol = protocol_of(path)
        if protocol is not None:
            self.model.metrics.request(protocol, "invalid", seconds)

    def _register_endpoints(self, app: FastAPI) -> None:
        app.router.routes.extend(
            PredictorRoutes(
                self.model, self.dataplane, self.max_body_bytes, self.payload_log
            ).routes()
        )
        app.router.routes.append(Route(REPOSITORY_PATH, no_repository, methods=REPOSITORY_METHODS))
        # Deviation from KServe: its V2 router always mounts the repository extension's
        # load and unload routes; ours, in front of them, answers every repository path
        # (any method) with a 404, so KServe's are never reached.
        super()._register_endpoints(app)

    def _add_exception_handlers(self, app: FastAPI) -> None:
        from fastapi.exceptions import RequestValidationError
        from kserve import errors as kserve_errors
        from starlette.exceptions import HTTPException

        from serving.errors import PredictorError

        handler: Callable[[Request, Exception], Awaitable[Response]] = handle_error
        for kind in (
            PredictorError,
            kserve_errors.InvalidInput,
            kserve_errors.InferenceError,
            kserve_errors.ModelNotFound,
            kserve_errors.ModelNotReady,
            kserve_errors.ServerNotReady,
            kserve_errors.ServerNotLive,
            kserve_errors.UnsupportedProtocol,
            NotImplementedError,
            RequestValidationError,
            HTTPException,
            Exception,
        ):
            app.add_exception_handler(kind, handler)
