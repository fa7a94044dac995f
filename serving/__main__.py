"""`python -m serving`: the V2 predictor.

    python -m serving --model_uri models:/breast-cancer@champion --http_port 8080 --grpc_port 8081

KServe's own flags (`--http_port`, `--grpc_port`, `--workers`, ...) plus ours, each
of which also reads an environment variable (`python -m serving --help`). Exit code 2
on a configuration error; a registry that is down or a version that does not exist yet
is not an error: the server stays alive, not ready, and retries.
"""

from __future__ import annotations

import argparse
import copy
import gc
import logging
import logging.config
import os
import sys
from typing import TYPE_CHECKING

from contract import upstream
from serving.errors import ConfigError
from serving.registry import Prefetch

if TYPE_CHECKING:  # imported at run time only once the process is prepared
    from serving.model import RegistryModel
    from serving.server import PredictorServer

logger = logging.getLogger("serving")


def prepare_process() -> None:
    """Process-wide settings that must precede the imports of numpy and scikit-learn."""
    # Requests run in parallel, not inside one: a native thread pool per prediction
    # (OpenMP in tree ensembles, BLAS) only contends with the event loop for the CPUs
    # the pod is given. Set these variables to use more.
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    upstream.leave_out_imports()


def configure_logging(args: argparse.Namespace) -> None:
    """KServe's log format for KServe's, uvicorn's and our loggers."""
    if not args.configure_logging:
        return
    from kserve import logging as kserve_logging

    if args.log_config_file:
        kserve_logging.configure_logging(args.log_config_file)
        return
    config = copy.deepcopy(kserve_logging.KSERVE_LOG_CONFIG)
    level = os.environ.get("LOG_LEVEL", kserve_logging.KSERVE_LOGLEVEL).upper()
    config["loggers"]["serving"] = {"handlers": ["kserve"], "level": level, "propagate": False}
    config["loggers"]["training"] = {"handlers": ["kserve"], "level": level, "propagate": False}
    kserve_logging.configure_logging(config)


# KServe's flags this predictor honours, with help that says what they do here; the
# rest of KServe's parser (the transformer's --predictor_host..., --ssl_*,
# --enable_latency_logging, which the predictor turns off) is still accepted, as
# before, but left out of --help. Each default is shown once, in the text.
KSERVE_FLAGS_THAT_APPLY = {
    "http_port": "HTTP port of V2 REST, /metrics and the health checks (default {default})",
    "grpc_port": "gRPC port of V2 (default {default})",
    "workers": "must be 1: one model and one metrics registry per process; "
    "scale out with replicas (default {default})",
    "max_threads": "gRPC worker threads (default {default})",
    "enable_grpc": "serve V2 over gRPC too (default {default})",
    "grpc_max_receive_message_length": "largest gRPC message received, in bytes; the "
    "smaller of this and --max_body_bytes applies (default {default})",
    "configure_logging": "configure KServe's and uvicorn's logging (default {default})",
    "log_config_file": "a YAML or JSON logging configuration to use instead (default none)",
    "event_loop": "the HTTP server's event loop: asyncio, uvloop, or auto (uvloop if "
    "installed) (default {default})",
    "timeout_keep_alive": "seconds an idle keep-alive connection stays open; keep it longer "
    "than a proxy's idle timeout (default {default})",
    "model_name": "the served model name, /v2/models/NAME (env MODEL_NAME; default {default})",
}


def build_parser() -> argparse.ArgumentParser:
    from kserve import model_server

    from contract.flags import FlagParser
    from serving.settings import DEFAULT_EVENT_LOOP, add_arguments

    parser = FlagParser(
        prog="python -m serving",
        description="Serve a registered scikit-learn model over V2 REST and gRPC. Every "
        "flag takes either spelling, --tracking_uri or --tracking-uri.",
        # A copy: a parent's flags are shared objects, and their help changes below.
        parents=[copy.deepcopy(model_server.parser)],
    )
    for action in parser._actions:
        if action.dest == "event_loop":  # KServe's help names its own default
            action.default = DEFAULT_EVENT_LOOP
    kserve_actions = [a for a in parser._actions if a.dest != "help"]
    add_arguments(parser)
    for action in kserve_actions:
        text = KSERVE_FLAGS_THAT_APPLY.get(action.dest)
        default = parser.get_default(action.dest)
        action.help = text.format(default=default) if text else argparse.SUPPRESS
    return parser


def start_prefetch(argv: list[str] | None) -> Prefetch | None:
    """Start fetching the model before anything heavy is imported, from our own flags
    alone. Whatever is wrong here is left for the full parse to report."""
    from contract.flags import FlagParser
    from serving.settings import Settings, add_arguments

    if {"-h", "--help"} & set(sys.argv[1:] if argv is None else argv):
        return None
    parser = FlagParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    try:
        args, _ = add_arguments(parser).parse_known_args(argv)
        early = Settings(
            model_uri=args.model_uri or "",
            tracking_uri=args.tracking_uri or "",
            registry_timeout_seconds=args.registry_timeout_seconds,
        )
    except (ConfigError, argparse.ArgumentError):
        return None
    return Prefetch(early.model_ref, early.tracking_uri, early.registry_timeout_seconds)


def start_up(argv: list[str] | None) -> tuple[PredictorServer, RegistryModel]:
    """Everything before listening: the server and its model, or a `ConfigError`."""
    prepare_process()
    # The child imports MLflow and downloads on one core while this process imports
    # KServe and scikit-learn on the other.
    prefetch = start_prefetch(argv)
    try:
        # What loading needs is imported here, not in the loader thread: there, next to
        # the event loop answering health probes, the same imports ran up to twice as
        # slow (they share the GIL). And before KServe: skops, as it is imported, looks
        # each of ~420 ufuncs up in every loaded module, so it costs least with the
        # fewest loaded.
        from serving.loader import preload

        preload()
        args = build_parser().parse_args(argv)
        configure_logging(args)
        from serving.settings import settings_from_args

        settings = settings_from_args(args)
        from serving.model import RegistryModel
        from serving.server import PredictorServer
    except BaseException:  # a configuration error, --help, argparse's exit, a broken install
        if prefetch is not None:
            prefetch.close()
        raise
    logger.info(
        "predictor for %s from %s: HTTP %d%s",
        settings.model_uri,
        settings.tracking_uri,
        settings.http_port,
        f", gRPC {settings.grpc_port}" if settings.enable_grpc else "",
    )
    return PredictorServer(settings), RegistryModel(settings, prefetch=prefetch)


def main(argv: list[str] | None = None) -> int:
    # Starting imports some 2,300 modules whose objects live as long as the process:
    # collecting cycles among them meanwhile frees nothing (about a thousand objects of
    # 330,000) and costs a tenth of the start. Once imported, they are frozen rather than
    # collected: the first collection after `gc.enable()` would walk all of them, about
    # 0.2 s of CPU between the imports and ready.
    gc.disable()
    try:
        server, model = start_up(argv)
    except ConfigError as e:
        logging.basicConfig()
        logger.error("configuration error: %s", e)
        return 2
    finally:
        upstream.freeze_long_lived_objects()
        gc.enable()
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
