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
import importlib.abc
import logging
import logging.config
import os
import sys

from serving.errors import ConfigError

logger = logging.getLogger("serving")


class LeaveOut(importlib.abc.MetaPathFinder):
    """Makes `import NAME` fail in this process as if NAME were not installed."""

    def __init__(self, *names: str) -> None:
        self.names = frozenset(names)

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{fullname} is left out of the predictor", name=fullname)


def prepare_process() -> None:
    """Process-wide settings that must precede the imports of numpy and scikit-learn."""
    # Requests run in parallel, not inside one: a native thread pool per prediction
    # (OpenMP in tree ensembles, BLAS) only contends with the event loop for the CPUs
    # the pod is given. Set these variables to use more.
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    # pandas, which KServe imports, loads pyarrow whenever it is installed (MLflow installs
    # it): about 35 MB resident per replica for a library the predictor never calls.
    # pandas (like scikit-learn's dataframe checks) carries on without it.
    if not any(isinstance(f, LeaveOut) for f in sys.meta_path):
        sys.meta_path.insert(0, LeaveOut("pyarrow"))


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


def build_parser() -> argparse.ArgumentParser:
    from kserve import model_server

    from serving.settings import add_arguments

    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve a registered scikit-learn model over V2 REST and gRPC.",
        parents=[model_server.parser],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    return add_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    prepare_process()
    try:
        args = build_parser().parse_args(argv)
        configure_logging(args)
        from serving.settings import settings_from_args

        settings = settings_from_args(args)
    except ConfigError as e:
        logging.basicConfig()
        logger.error("configuration error: %s", e)
        return 2

    from serving.model import RegistryModel
    from serving.server import PredictorServer

    logger.info(
        "predictor for %s from %s: HTTP %d%s",
        settings.model_uri,
        settings.tracking_uri,
        settings.http_port,
        f", gRPC {settings.grpc_port}" if settings.enable_grpc else "",
    )
    server = PredictorServer(settings)
    server.start([RegistryModel(settings)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
