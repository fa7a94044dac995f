"""Typed settings of the predictor. KServe's own flags (`--http_port`, `--grpc_port`,
`--workers`, ...) stay KServe's; ours each have an environment variable of the same
name in upper case, which is what the Helm chart sets."""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from contract import uris
from contract.uris import DEFAULT_MODEL_NAME, ModelRef
from serving.errors import ConfigError

# KServe's `--event-loop` defaults to uvloop where installed. Measured here, uvloop gave
# the same throughput as asyncio's loop with a higher p99 at concurrency 8 (19 ms
# against 13-15 ms), so the predictor's default is asyncio's.
DEFAULT_EVENT_LOOP = "asyncio"
MODEL_RUNTIMES = ("auto", "onnx", "sklearn")
LOGGER_MODES = ("all", "request", "response")
"""`LOGGER_MODE`'s choices, KServe's `logger.mode` (serving.payload_logger.LOGGER_MODES)."""
"""`MODEL_RUNTIME`'s choices (serving.loader.RUNTIME_CHOICES, without importing numpy)."""


@dataclass(frozen=True)
class Settings:
    model_uri: str
    """`models:/NAME/VERSION` or `models:/NAME@ALIAS` (`MODEL_URI`)."""
    tracking_uri: str
    """MLflow server the registry lives on (`MLFLOW_TRACKING_URI`)."""
    model_name: str = DEFAULT_MODEL_NAME
    """Name the model is served under on `/v2/models/NAME` (`MODEL_NAME`)."""
    max_batch_size: int = 1024
    """Most rows one request may carry (`MAX_BATCH_SIZE`); more is a 400."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Largest request body, HTTP and gRPC (`MAX_BODY_BYTES`); more is a 413."""
    host: str | None = None
    """Address both servers listen on (`HOST`, `--host`): an IP address or a host name,
    e.g. 127.0.0.1 for this machine only. Unset, as in the cluster, REST listens on
    0.0.0.0 and gRPC on [::] (every interface, as KServe does)."""
    max_header_bytes: int = 32 * 1024
    """Largest HTTP request head, request line and headers (`MAX_HEADER_BYTES`); more is
    a 431."""
    max_header_count: int = 100
    """Most header fields of one HTTP request (`MAX_HEADER_COUNT`); more is a 431."""
    drain_seconds: float = 2.0
    """After SIGTERM, how long an idle keep-alive connection stays open for one last
    request, answered with `Connection: close` (`DRAIN_SECONDS`); within the grace period."""
    http_port: int = 8080
    grpc_port: int = 8081
    enable_grpc: bool = True
    grpc_max_threads: int = 4
    grpc_max_pending_calls: int = 10_000
    """gRPC calls that may wait for the server to take them up (`GRPC_MAX_PENDING_CALLS`);
    past it gRPC core refuses a call, which the client sees as CANCELLED."""
    grpc_max_message_bytes: int | None = None
    """KServe's `--grpc_max_receive_message_length`; the smaller of it and
    `max_body_bytes` applies."""
    access_log: bool = False
    """One uvicorn access-log line per request (`ACCESS_LOG`). Off by default: the
    request metrics carry the same information at a fraction of the cost."""
    load_retry_initial_seconds: float = 0.5
    """First wait after a failed load (`LOAD_RETRY_INITIAL_SECONDS`); doubles each time."""
    load_retry_max_seconds: float = 15.0
    """Longest wait between load attempts (`LOAD_RETRY_MAX_SECONDS`)."""
    load_retry_invalid_max_seconds: float = 300.0
    """Longest wait between load attempts while the version cannot be served (a truncated
    or refused artifact: `LOAD_RETRY_INVALID_MAX_SECONDS`)."""
    registry_timeout_seconds: float = 10.0
    """Timeout of one call to the registry (`REGISTRY_TIMEOUT_SECONDS`)."""
    timeout_keep_alive: int = 65
    grace_period: int = 30
    event_loop: str = DEFAULT_EVENT_LOOP
    """KServe's `--event-loop`: `asyncio`, `uvloop`, or `auto` (uvloop where installed)."""
    model_runtime: str = "auto"
    """`MODEL_RUNTIME`: `auto` serves with ONNX Runtime where the version's ONNX copy passed
    training's parity gate and is intact, else with scikit-learn; `onnx` or `sklearn`
    forces one (`onnx` refuses a version without a usable copy)."""
    feature_drift: bool = True
    """Count served rows into the bins of the version's drift profile (`FEATURE_DRIFT`);
    a version without a profile is served without counting either way."""
    logger_url: str | None = None
    """Where the predictor posts each answered request and response as KServe's payload
    logger would (`LOGGER_URL`): the prediction log's URL. Unset (the default, and in the
    cluster, where KServe's agent does it): nothing is posted."""
    logger_mode: str = "all"
    """What is posted (`LOGGER_MODE`, as KServe's `logger.mode`): all, request, response."""
    logger_queue_size: int = 1000
    """Exchanges waiting to be posted (`LOGGER_QUEUE_SIZE`); past it they are dropped
    (counted), never waited for."""
    logger_batch_size: int = 64
    """Most exchanges per POST to `LOGGER_URL` (`LOGGER_BATCH_SIZE`), as one batched-mode
    CloudEvents body; 1 posts each event alone in binary mode, as KServe's agent does."""

    def __post_init__(self) -> None:
        problems = []
        try:
            self.model_ref  # noqa: B018 - validates the URI early, with its own message
        except ConfigError as e:
            problems.append(str(e))
        if not self.tracking_uri:
            problems.append(
                "no registry: set MLFLOW_TRACKING_URI (or --tracking_uri), "
                "e.g. http://127.0.0.1:5000"
            )
        if not self.model_name or "/" in self.model_name:
            problems.append(f"MODEL_NAME {self.model_name!r} must be a non-empty name without '/'")
        if self.max_batch_size < 1:
            problems.append(f"MAX_BATCH_SIZE must be at least 1, got {self.max_batch_size}")
        if self.max_body_bytes < 1024:
            problems.append(f"MAX_BODY_BYTES must be at least 1024, got {self.max_body_bytes}")
        if not 0 < self.load_retry_initial_seconds <= self.load_retry_max_seconds:
            problems.append(
                "need 0 < LOAD_RETRY_INITIAL_SECONDS <= LOAD_RETRY_MAX_SECONDS, got "
                f"{self.load_retry_initial_seconds} and {self.load_retry_max_seconds}"
            )
        problems += self._http_problems()
        if self.load_retry_invalid_max_seconds < self.load_retry_max_seconds:
            problems.append(
                "need LOAD_RETRY_INVALID_MAX_SECONDS >= LOAD_RETRY_MAX_SECONDS, got "
                f"{self.load_retry_invalid_max_seconds} and {self.load_retry_max_seconds}"
            )
        if self.registry_timeout_seconds <= 0:
            problems.append("REGISTRY_TIMEOUT_SECONDS must be positive")
        if self.host is not None and not valid_host(self.host):
            problems.append(
                f"HOST {self.host!r} must be an IP address or a host name, without a scheme "
                "or port (e.g. 127.0.0.1, ::1 or 0.0.0.0)"
            )
        if self.model_runtime not in MODEL_RUNTIMES:
            problems.append(
                f"MODEL_RUNTIME {self.model_runtime!r}: choose from {', '.join(MODEL_RUNTIMES)}"
            )
        problems += self._logger_problems()
        if self.event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
            # The image leaves uvloop out: asyncio's loop, the default, did better here.
            problems.append("--event-loop uvloop: uvloop is not installed (asyncio needs nothing)")
        if problems:
            raise ConfigError("; ".join(problems))

    def _logger_problems(self) -> list[str]:
        problems = []
        if self.logger_url is not None and not re.match(r"^https?://[^/\s]+", self.logger_url):
            problems.append(
                f"LOGGER_URL {self.logger_url!r} must be an http:// or https:// URL, "
                "e.g. http://127.0.0.1:8082/"
            )
        if self.logger_mode not in LOGGER_MODES:
            problems.append(
                f"LOGGER_MODE {self.logger_mode!r}: choose from {', '.join(LOGGER_MODES)}"
            )
        if self.logger_queue_size < 1:
            problems.append(f"LOGGER_QUEUE_SIZE must be at least 1, got {self.logger_queue_size}")
        if not 1 <= self.logger_batch_size <= 500:
            problems.append(f"LOGGER_BATCH_SIZE must be 1 to 500, got {self.logger_batch_size}")
        return problems

    def _http_problems(self) -> list[str]:
        problems = []
        if self.max_header_bytes < 1024:
            problems.append(f"MAX_HEADER_BYTES must be at least 1024, got {self.max_header_bytes}")
        if self.grpc_max_pending_calls < 1:
            problems.append(
                f"GRPC_MAX_PENDING_CALLS must be at least 1, got {self.grpc_max_pending_calls}"
            )
        if self.max_header_count < 8:
            problems.append(f"MAX_HEADER_COUNT must be at least 8, got {self.max_header_count}")
        if not 0 <= self.drain_seconds < self.grace_period:
            problems.append(
                f"need 0 <= DRAIN_SECONDS < the grace period ({self.grace_period}s), "
                f"got {self.drain_seconds}"
            )
        return problems

    @property
    def model_ref(self) -> ModelRef:
        """The parsed MODEL_URI; a URI the contract refuses is a `ConfigError` (exit 2)."""
        try:
            return uris.parse_model_uri(self.model_uri)
        except uris.InvalidModelUri as e:
            raise ConfigError(str(e)) from e

    @property
    def grpc_receive_limit(self) -> int:
        if self.grpc_max_message_bytes is None:
            return self.max_body_bytes
        return min(self.max_body_bytes, self.grpc_max_message_bytes)


_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOST_NAME.match(host))
    return True


def grpc_address(host: str | None, port: int) -> str:
    """gRPC's `host:port`, with an IPv6 address in brackets; every interface when unset."""
    if host is None:
        return f"[::]:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _env_flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _from_env(env: Mapping[str, str], variable: str, kind: type, default: object) -> object:
    raw = env.get(variable)
    if raw is None:
        return default
    try:
        return kind(raw)
    except ValueError as e:
        raise ConfigError(f"{variable}={raw!r} is not a valid {kind.__name__}") from e


def add_arguments(
    parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None
) -> argparse.ArgumentParser:
    """Add our flags to a parser that already has KServe's (`parents=[kserve's parser]`).

    Every default comes from the environment, so a flag on the command line wins over
    the variable, which wins over the built-in default.
    """
    env = os.environ if env is None else env
    defaults = Settings.__dataclass_fields__

    def default_of(name: str) -> object:
        return defaults[name].default

    # KServe already defines --model_name (default "model"); only its default changes.
    parser.set_defaults(model_name=env.get("MODEL_NAME", DEFAULT_MODEL_NAME))
    group = parser.add_argument_group("predictor (each also from the environment)")
    group.add_argument(
        "--model_uri",
        default=env.get("MODEL_URI"),
        help="models:/NAME/VERSION or models:/NAME@ALIAS (env MODEL_URI)",
    )
    group.add_argument(
        "--tracking_uri",
        default=env.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking server holding the registry (env MLFLOW_TRACKING_URI)",
    )
    for flag, kind, text in (
        ("max_batch_size", int, "most rows per request"),
        ("max_body_bytes", int, "largest request body in bytes (HTTP and gRPC)"),
        ("max_header_bytes", int, "largest HTTP request head (request line and headers)"),
        ("max_header_count", int, "most header fields of one HTTP request"),
        (
            "drain_seconds",
            float,
            "after SIGTERM, how long idle connections wait for a last request",
        ),
        ("load_retry_initial_seconds", float, "first wait after a failed model load"),
        ("load_retry_max_seconds", float, "longest wait between model load attempts"),
        (
            "load_retry_invalid_max_seconds",
            float,
            "longest wait between load attempts of a version that cannot be served",
        ),
        ("registry_timeout_seconds", float, "timeout of one registry call"),
        ("grpc_max_pending_calls", int, "gRPC calls that may wait to be taken up"),
        ("logger_queue_size", int, "exchanges waiting to be posted to LOGGER_URL"),
        ("logger_batch_size", int, "most exchanges per POST to LOGGER_URL (1: binary mode)"),
    ):
        variable = flag.upper()
        group.add_argument(
            f"--{flag}",
            type=kind,
            default=_from_env(env, variable, kind, default_of(flag)),
            help=f"{text} (env {variable}; default {default_of(flag)})",
        )
    group.add_argument(
        "--host",
        default=env.get("HOST") or None,
        help="address to listen on, REST and gRPC, e.g. 127.0.0.1 (env HOST; default: "
        "every interface, 0.0.0.0 for REST and [::] for gRPC)",
    )
    group.add_argument(
        "--model_runtime",
        choices=MODEL_RUNTIMES,
        default=env.get("MODEL_RUNTIME", default_of("model_runtime")),
        help="auto: ONNX Runtime where the version's ONNX copy passed parity, else "
        "scikit-learn; onnx or sklearn forces one (env MODEL_RUNTIME; default auto)",
    )
    group.add_argument(
        "--logger_url",
        default=env.get("LOGGER_URL") or None,
        help="post every answered request and response as KServe's payload-logger "
        "CloudEvents to this URL, e.g. the prediction log's (env LOGGER_URL; default: off)",
    )
    group.add_argument(
        "--logger_mode",
        choices=LOGGER_MODES,
        default=env.get("LOGGER_MODE", default_of("logger_mode")),
        help="what LOGGER_URL gets: all, request or response (env LOGGER_MODE; default all)",
    )
    group.add_argument(
        "--access_log",
        type=_env_flag,
        default=_env_flag(env.get("ACCESS_LOG", "false")),
        help="log one line per request (env ACCESS_LOG; default false)",
    )
    group.add_argument(
        "--feature_drift",
        type=_env_flag,
        default=_env_flag(env.get("FEATURE_DRIFT", "true")),
        help="count served rows into the version's drift-profile bins, exported as "
        "inference_feature_bin_total (env FEATURE_DRIFT; default true)",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from a namespace parsed by a parser built with `add_arguments`."""
    if getattr(args, "workers", 1) != 1:
        # Worker processes would each hold a model and a metrics registry of their own,
        # so /metrics would report one worker at random: scale replicas instead.
        raise ConfigError(
            f"--workers {args.workers}: the predictor runs one worker per process; "
            "scale out with more replicas"
        )
    return Settings(
        model_uri=args.model_uri or "",
        tracking_uri=args.tracking_uri or "",
        model_name=args.model_name,
        max_batch_size=args.max_batch_size,
        max_body_bytes=args.max_body_bytes,
        max_header_bytes=args.max_header_bytes,
        max_header_count=args.max_header_count,
        drain_seconds=args.drain_seconds,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        enable_grpc=args.enable_grpc,
        grpc_max_threads=args.max_threads,
        grpc_max_pending_calls=args.grpc_max_pending_calls,
        grpc_max_message_bytes=args.grpc_max_receive_message_length,
        access_log=args.access_log,
        load_retry_initial_seconds=args.load_retry_initial_seconds,
        load_retry_max_seconds=args.load_retry_max_seconds,
        load_retry_invalid_max_seconds=args.load_retry_invalid_max_seconds,
        registry_timeout_seconds=args.registry_timeout_seconds,
        timeout_keep_alive=args.timeout_keep_alive,
        event_loop=args.event_loop,
        model_runtime=args.model_runtime,
        feature_drift=args.feature_drift,
        logger_url=args.logger_url,
        logger_mode=args.logger_mode,
        logger_queue_size=args.logger_queue_size,
        logger_batch_size=args.logger_batch_size,
    )
