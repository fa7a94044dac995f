"""The predictor's failures, and the one place that maps any exception to what a client
sees: an HTTP status, a gRPC status code, a metrics outcome and a message.

Request errors say what was wrong and what was expected; the code that finds them only
raises, never builds a response.
"""

from __future__ import annotations

import logging
import reprlib
from dataclasses import dataclass
from typing import ClassVar

from contract.metric_names import ERROR, INVALID  # the `outcome` label's values

logger = logging.getLogger(__name__)

_QUOTE = reprlib.Repr()  # keyword arguments only from Python 3.12 on
_QUOTE.maxstring = _QUOTE.maxother = 48
_QUOTE.maxlist = _QUOTE.maxtuple = 6
_QUOTE.maxdict, _QUOTE.maxlevel = 4, 2
MAX_MESSAGE = 512
"""Characters of an error message taken from an exception we did not write."""


class PredictorError(Exception):
    """Base of every failure the predictor raises on purpose."""

    status: ClassVar[int] = 500
    grpc_code: ClassVar[str] = "INTERNAL"  # a `grpc.StatusCode` name
    outcome: ClassVar[str] = ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type[PredictorError], tuple[str]]:
        # Keeps subclasses picklable across a process boundary with their message.
        return (type(self), (self.message,))


class ConfigError(PredictorError):
    """The settings cannot work; `python -m serving` exits 2."""


# --- request errors: the client's fault, counted as outcome="invalid" -------------------


class RequestError(PredictorError):
    status = 400
    grpc_code = "INVALID_ARGUMENT"
    outcome = INVALID


class InvalidRequest(RequestError):
    """The body is not a V2 (or V1) request this model can answer."""


class BodyTooLarge(RequestError):
    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class UnsupportedMediaType(RequestError):
    """A body in a Content-Type or Content-Encoding the route cannot read."""

    status = 415


class UnknownModel(RequestError):
    """The request names a model or version this server does not serve."""

    status = 404
    grpc_code = "NOT_FOUND"


class RepositoryNotServed(RequestError):
    """The model repository extension (load, unload, index) is not mounted: the
    predictor serves one model, fixed at start (a 404 over REST, UNIMPLEMENTED over gRPC)."""

    status = 404
    grpc_code = "UNIMPLEMENTED"

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message
            or "the model repository extension is not served: this predictor serves one "
            "model, fixed at start by MODEL_URI; to serve another version, point MODEL_URI "
            "(or the alias it names) at it and restart"
        )


# --- server-side states ------------------------------------------------------------------


class ModelNotReady(PredictorError):
    """No model loaded yet: the registry is down or the version does not exist (yet)."""

    status = 503
    grpc_code = "UNAVAILABLE"


# --- load errors: why `load()` waits; never sent to a client as such -------------------


class LoadError(PredictorError):
    """A load attempt failed; the predictor stays alive and retries."""


class RegistryUnavailable(LoadError):
    """The MLflow server did not answer, or answered with a server error."""


class ModelVersionMissing(LoadError):
    """The registered model, version or alias does not exist (yet)."""


class InvalidModel(LoadError):
    """The version exists but cannot be served (format, allow-list, signature)."""


@dataclass(frozen=True)
class ErrorInfo:
    status: int
    grpc_code: str
    outcome: str
    message: str

    def body(self) -> dict[str, str]:
        return {"error": self.message}


def quoted(value: object) -> str:
    """What a client sent (a name, an id, a shape), as an error message quotes it: its
    repr cut to a short prefix. A name of megabytes must not come back as a log line and
    a response body of megabytes; lone surrogates come out escaped."""
    return _QUOTE.repr(value)


def capped(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def log_failure(where: str, info: ErrorInfo, exc: BaseException) -> None:
    """One line per failed request (REST or gRPC); a traceback only for our own bugs."""
    if info.status >= 500 and info.status != 503:
        logger.error("%s answered %d: %s", capped(where), info.status, info.message, exc_info=exc)
    elif info.status == 503:
        logger.debug("%s answered 503: %s", capped(where), info.message)
    else:
        logger.warning("%s rejected (%d): %s", capped(where), info.status, info.message)


def describe(exc: BaseException) -> ErrorInfo:
    """Map any exception raised while answering a request to what the client gets.

    Besides our own errors this covers what KServe and FastAPI raise on the routes they
    keep (V1, health, metadata), so those answer with the same `{"error": ...}` shape.
    """
    if isinstance(exc, PredictorError):
        return ErrorInfo(exc.status, exc.grpc_code, exc.outcome, exc.message)
    info = _describe_foreign(exc)
    # Their messages may quote the request at any length (a model name, a route).
    return ErrorInfo(info.status, info.grpc_code, info.outcome, capped(info.message))


def _describe_foreign(exc: BaseException) -> ErrorInfo:
    # Imported here: the registry helper process uses this module without KServe.
    from fastapi.exceptions import RequestValidationError
    from kserve import errors as kserve_errors
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    if isinstance(exc, kserve_errors.InvalidInput):
        return ErrorInfo(400, "INVALID_ARGUMENT", INVALID, f"invalid request: {exc}")
    if isinstance(exc, kserve_errors.ModelNotFound):
        return ErrorInfo(404, "NOT_FOUND", INVALID, str(exc))
    if isinstance(exc, kserve_errors.ModelNotReady | kserve_errors.ServerNotReady):
        return ErrorInfo(503, "UNAVAILABLE", ERROR, str(exc))
    if isinstance(exc, NotImplementedError):
        return ErrorInfo(501, "UNIMPLEMENTED", INVALID, f"not supported: {exc}")
    if isinstance(exc, RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return ErrorInfo(400, "INVALID_ARGUMENT", INVALID, f"invalid request: {problems}")
    if isinstance(exc, ClientDisconnect):
        return ErrorInfo(400, "CANCELLED", INVALID, "the client disconnected mid-request")
    if isinstance(exc, HTTPException):
        outcome = INVALID if exc.status_code < 500 else ERROR
        return ErrorInfo(exc.status_code, "UNKNOWN", outcome, str(exc.detail))
    return ErrorInfo(
        500, "INTERNAL", ERROR, f"internal error ({type(exc).__name__}); see the server log"
    )
