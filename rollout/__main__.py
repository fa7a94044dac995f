"""`python -m rollout COMMAND ...`: status, start, analyze, promote, rollback, auto, controller.

Exit codes (errors.ExitCode): 0 ok / pass / promoted, 1 fail / rolled back,
2 usage error or refused, 3 inconclusive, 4 Kubernetes / MLflow / Prometheus error,
5 rollback failed.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from contract import mlflow_client
from rollout.errors import ConfigError, RolloutError
from rollout.plan import Interrupted
from rollout.settings import Settings, build_parser, settings_from_args

logger = logging.getLogger("rollout")


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(os.environ).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("urllib3", "mlflow", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow retries an unreachable server for minutes by default; a CLI should say so sooner.
    mlflow_client.DEFAULT.apply()
    from rollout.commands import Rollout

    try:
        settings = settings_from_args(args)
        if settings.command == "controller":
            return _controller(settings)
        # SIGTERM (kill, a Job's deadline) rolls `auto` back like Ctrl-C does.
        signal.signal(signal.SIGTERM, _raise_interrupted)
        rollout = Rollout(settings)
        run = {
            "status": rollout.status,
            "start": rollout.start,
            "analyze": rollout.analyze,
            "promote": rollout.promote,
            "rollback": rollout.rollback,
            "auto": rollout.auto,
        }[settings.command]
        return int(run())
    except RolloutError as e:
        logger.error("%s", e)
        return int(e.exit_code)
    except (KeyboardInterrupt, Interrupted):
        logger.error("interrupted")
        return 130


def _controller(settings: Settings) -> int:
    """kopf handles SIGTERM itself: it stops the watch, then our workers end their tick
    (locally, run_local does the same without kopf)."""
    from rollout.controller import run, run_local
    from rollout.reconcile import ControllerConfig
    from rollout.settings import LOCAL

    if settings.dry_run:
        raise ConfigError("the controller has no --dry-run; `auto --dry-run` shows the patches")
    local = settings.target == LOCAL
    try:
        config = ControllerConfig(
            settings.schedule,
            settings.poll_seconds,
            settings.grace_seconds,
            ready_timeout_seconds=settings.ready_timeout_seconds,
            print_analyses=local,  # the demo shows each verdict table as it happens
        )
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return run_local(settings, config) if local else run(settings, config)


if __name__ == "__main__":
    sys.exit(main())
