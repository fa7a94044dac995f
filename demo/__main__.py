"""`python -m demo up|down`: what `make demo` and `make demo-down` run.

    python -m demo up [--dir .demo] [--mlflow-port 5000] [--predictor-port 8080] ...
    python -m demo down [--dir .demo] [--clean]

Exit codes: 0 done, 1 a step failed (the message names the log to read), 2 bad settings
or a busy port.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from demo.processes import DemoError, PortBusy
from demo.settings import DemoSettings


def build_parser() -> argparse.ArgumentParser:
    d = DemoSettings()
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description="The local demo: MLflow, training, a local InferenceService, locust, "
        "Prometheus, and the rollout controller promoting one version and rolling one back.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="start (or reuse) everything and run the story")
    down = commands.add_parser("down", help="stop every process `up` started, by PID")
    for sub in (up, down):
        sub.add_argument("--dir", type=Path, default=d.state_dir, help="state folder")
    down.add_argument("--clean", action="store_true", help="also delete the state folder")
    up.add_argument("--model-name", default=d.model_name)
    for flag, default in (
        ("mlflow-port", d.mlflow_port),
        ("predictor-port", d.predictor_port),
        ("predictor-grpc-port", d.predictor_grpc_port),
        ("canary-port", d.canary_port),
        ("canary-grpc-port", d.canary_grpc_port),
        ("slot-b-port", d.slot_b_port),
        ("slot-b-grpc-port", d.slot_b_grpc_port),
        ("controller-port", d.controller_port),
        ("prometheus-port", d.prometheus_port),
        ("postgres-port", d.postgres_port),
        ("predictionlog-port", d.predictionlog_port),
        ("users", d.users),
        ("load-seconds", d.load_seconds),
        ("canary-seconds", d.canary_seconds),
        ("canary-weight", d.canary_weight),
        ("min-requests", d.min_requests),
    ):
        up.add_argument(f"--{flag}", type=int, default=default)
    return parser


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    if args.command == "down":
        return DemoSettings(state_dir=args.dir)
    return DemoSettings(
        state_dir=args.dir,
        model_name=args.model_name,
        mlflow_port=args.mlflow_port,
        predictor_port=args.predictor_port,
        predictor_grpc_port=args.predictor_grpc_port,
        canary_port=args.canary_port,
        canary_grpc_port=args.canary_grpc_port,
        slot_b_port=args.slot_b_port,
        slot_b_grpc_port=args.slot_b_grpc_port,
        postgres_port=args.postgres_port,
        predictionlog_port=args.predictionlog_port,
        controller_port=args.controller_port,
        prometheus_port=args.prometheus_port,
        users=args.users,
        load_seconds=args.load_seconds,
        canary_seconds=args.canary_seconds,
        canary_weight=args.canary_weight,
        min_requests=args.min_requests,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="    %(message)s")
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    # MLflow's usage telemetry stays off in every process the demo starts, as in the
    # chart (`mlflow.telemetry`), unless the user's environment says otherwise.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from demo.flow import Demo

    demo = Demo(settings)
    try:
        return demo.up() if args.command == "up" else demo.down(args.clean)
    except PortBusy as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    except DemoError as e:
        print(f"\ndemo: {e}", file=sys.stderr)
        if args.command == "up":
            print(
                "demo: what started keeps running for a look at its log; `make demo-down` stops it",
                file=sys.stderr,
            )
        return 1


if __name__ == "__main__":
    sys.exit(main())
