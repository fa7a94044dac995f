"""Typed settings of `python -m rollout` and the parser that fills them.

Flags after the subcommand; where a setting has a well-known environment variable
(`MODEL_NAME`, `MLFLOW_TRACKING_URI`, `PROMETHEUS_URL`, `ISVC_NAME`, `KUBECONFIG`,
`ROLLOUT_TARGET`, `ROLLOUT_LOCAL_DIR`) its default comes from there.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass

from contract.flags import FlagParser
from contract.uris import CHALLENGER, DEFAULT_MODEL_NAME, is_version_number
from rollout import queries
from rollout.analysis import Thresholds
from rollout.errors import ConfigError
from rollout.kube import KubeSettings
from rollout.plan import Schedule

DEFAULT_TRACKING_URI = "http://127.0.0.1:5000"
DEFAULT_PROMETHEUS_URL = "http://127.0.0.1:9090"
KUBERNETES, LOCAL = "kubernetes", "local"
TARGETS = (KUBERNETES, LOCAL)
DEFAULT_LOCAL_DIR = ".demo/cluster"
"""Where `make demo` keeps its local cluster (contract/local_cluster.py)."""


@dataclass(frozen=True)
class Settings:
    command: str
    model_name: str
    """Registered model name, which is also the served V2 name and the metrics' model_name."""
    tracking_uri: str
    prometheus_url: str
    kube: KubeSettings
    dry_run: bool
    thresholds: Thresholds
    window: str
    """Range of the `analyze` queries (a Prometheus duration)."""
    extra_matchers: str
    """`--match`: label matchers added to every query (empty: model_name/model_version only)."""
    version_ref: str | None
    """`start`/`auto`: a version number or an alias (`--version` / `--alias`)."""
    percent: int
    stable_ref: str | None
    canary_ref: str | None
    reason: str
    allow_rejected: bool
    schedule: Schedule
    poll_seconds: float = 30.0
    """`controller`: how often the registry is asked for a new @challenger."""
    ready_timeout_seconds: float = 300.0
    """`rollback`/`auto`/`controller --ready-timeout`: how long a rollback waits for the
    restored revision to get Ready before removing `canaryTrafficPercent: 0`."""
    grace_seconds: float = 120.0
    """`controller`: how long a step's analysis may be unavailable before rolling back."""
    controller_isvc: str | None = None
    """`controller --isvc`: drive this InferenceService only (default: every one that
    serves a `models:/` URI in the namespace)."""
    controller_listen: str = "0.0.0.0"
    """`controller --listen`: the address of /metrics, /readyz and /healthz."""
    controller_metrics_port: int = 9090
    controller_health_port: int = 8080
    target: str = KUBERNETES
    """`--target`: the Kubernetes API (kubeconfig) or `local`, the demo's local cluster."""
    local_dir: str = DEFAULT_LOCAL_DIR
    """`--local-dir`: the local cluster's folder (with `--target local`)."""


def _add_common(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    model_name = env.get("MODEL_NAME", DEFAULT_MODEL_NAME)
    group = parser.add_argument_group("where things are")
    group.add_argument(
        "--model-name",
        default=model_name,
        help=f"registered (and served) model name (env MODEL_NAME; default {model_name})",
    )
    group.add_argument(
        "--tracking-uri",
        default=env.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI),
        help="MLflow tracking/registry server (env MLFLOW_TRACKING_URI)",
    )
    group.add_argument(
        "--prometheus-url",
        default=env.get("PROMETHEUS_URL", DEFAULT_PROMETHEUS_URL),
        help="Prometheus HTTP API base URL (env PROMETHEUS_URL)",
    )
    group.add_argument(
        "--isvc",
        default=env.get("ISVC_NAME"),
        help="InferenceService name (env ISVC_NAME; default: the model name)",
    )
    group.add_argument(
        "--namespace", help="its namespace (default: the kubeconfig context's, or the pod's)"
    )
    group.add_argument(
        "--kubeconfig",
        default=env.get("KUBECONFIG"),
        help="kubeconfig file(s) (env KUBECONFIG; default ~/.kube/config, then in-cluster)",
    )
    group.add_argument("--context", help="kubeconfig context (default: the current one)")
    target = env.get("ROLLOUT_TARGET") or KUBERNETES
    group.add_argument(
        "--target",
        choices=TARGETS,
        default=target,  # checked in settings_from_args: a mistyped env must not fall back
        help="where the InferenceService is: the Kubernetes API, or `local`, the folder "
        f"`make demo` keeps it in (env ROLLOUT_TARGET; default {KUBERNETES})",
    )
    group.add_argument(
        "--local-dir",
        default=env.get("ROLLOUT_LOCAL_DIR") or DEFAULT_LOCAL_DIR,
        help="the local cluster's folder, with --target local (env ROLLOUT_LOCAL_DIR; "
        f"default {DEFAULT_LOCAL_DIR})",
    )
    group.add_argument(
        "--dry-run",
        action="store_true",
        help="print the patches and registry changes instead of applying them",
    )
    group.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _add_thresholds(parser: argparse.ArgumentParser) -> None:
    d = Thresholds()
    group = parser.add_argument_group("analysis thresholds")
    group.add_argument(
        "--match",
        default="",
        help='extra PromQL label matchers for every query, e.g. namespace="mlops" '
        "(default: none; versions are told apart by model_name and model_version)",
    )
    group.add_argument(
        "--min-requests",
        type=int,
        default=d.min_requests,
        help=f"requests (and predicted rows) each version needs (default {d.min_requests})",
    )
    group.add_argument(
        "--max-success-drop",
        type=float,
        default=d.max_success_drop,
        help=f"canary success ratio may be this far below stable's (default {d.max_success_drop})",
    )
    group.add_argument(
        "--max-p99-ratio",
        type=float,
        default=d.max_p99_ratio,
        help=f"canary p99 <= stable p99 x this + --p99-slack (default {d.max_p99_ratio})",
    )
    group.add_argument(
        "--p99-slack",
        type=float,
        default=d.p99_slack_seconds,
        help=f"seconds added to the allowed p99 (default {d.p99_slack_seconds})",
    )
    group.add_argument(
        "--max-class-drift",
        type=float,
        default=d.max_class_drift,
        help=f"largest Jensen-Shannon distance of the class mixes (default {d.max_class_drift})",
    )


def _add_version(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", help="registry version number to roll out")
    which.add_argument(
        "--alias", help=f"registry alias to resolve to a version (default @{CHALLENGER})"
    )
    parser.add_argument(
        "--allow-rejected",
        action="store_true",
        help="roll out a version an earlier rollout rejected",
    )


def _add_schedule(parser: argparse.ArgumentParser) -> None:
    s = Schedule()
    parser.add_argument(
        "--steps",
        default=",".join(map(str, s.steps)),
        help=f"traffic percentages, the last 100 = promote (default {','.join(map(str, s.steps))})",
    )
    parser.add_argument(
        "--soak",
        type=float,
        default=s.soak_seconds,
        help=f"seconds after each step before its first analysis (default {s.soak_seconds:g})",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=s.interval_seconds,
        help=f"seconds between analyses while inconclusive (default {s.interval_seconds:g})",
    )
    parser.add_argument(
        "--step-timeout",
        type=float,
        default=s.step_timeout_seconds,
        help=f"roll back when inconclusive this long (default {s.step_timeout_seconds:g})",
    )


def _add_ready_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=300.0,
        help="after a rollback, seconds to wait for the restored revision to get Ready "
        "before removing canaryTrafficPercent: 0 (default 300)",
    )


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    # Both spellings of every flag (--tracking-uri, --tracking_uri): contract/flags.py.
    parser = FlagParser(
        prog="python -m rollout",
        description=(
            "Canary rollouts of a KServe InferenceService, judged on Prometheus: "
            "start, analyze, promote or roll back, or all of it with `auto`. "
            "Exit codes: 0 ok/pass/promoted, 1 fail/rolled back, 2 usage or refused, "
            "3 inconclusive, 4 Kubernetes/MLflow/Prometheus error, 5 rollback failed."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _add_common(sub, env)
        return sub

    command("status", "stable and canary versions, traffic split, registry aliases")

    start = command("start", "start a canary: set MODEL_URI to a version and canaryTrafficPercent")
    _add_version(start)
    start.add_argument("--percent", type=int, default=10, help="canary traffic share (default 10)")

    analyze = command("analyze", "judge the canary against stable on Prometheus")
    analyze.add_argument(
        "--stable", help="stable version or alias (default: @champion, with --canary)"
    )
    analyze.add_argument(
        "--canary", help="canary version or alias (default: the InferenceService's canary)"
    )
    analyze.add_argument(
        "--window", default="5m", help="Prometheus range of the queries (default 5m)"
    )
    _add_thresholds(analyze)

    command("promote", "send all traffic to the canary and move @champion to its version")

    rollback = command("rollback", "send the canary 0 %%, restore stable in the spec, tag it")
    rollback.add_argument(
        "--reason", default="rolled back by the operator", help="recorded on the version"
    )
    _add_ready_timeout(rollback)

    auto = command("auto", "step through a schedule, analysing after each step")
    _add_version(auto)
    _add_schedule(auto)
    _add_ready_timeout(auto)
    _add_thresholds(auto)

    controller = command(
        "controller",
        "run in the cluster: take every new @challenger through the schedule on its own",
    )
    _add_schedule(controller)
    _add_ready_timeout(controller)
    _add_thresholds(controller)
    group = controller.add_argument_group("the controller")
    group.add_argument(
        "--poll",
        type=float,
        default=float(env.get("ROLLOUT_POLL_SECONDS", "30")),
        help="seconds between looks for a new @challenger (env ROLLOUT_POLL_SECONDS; default 30)",
    )
    group.add_argument(
        "--grace",
        type=float,
        default=120.0,
        help="roll back when a step's analysis cannot run (Prometheus down) this many "
        "seconds (default 120)",
    )
    group.add_argument(
        "--metrics-port",
        type=int,
        default=9090,
        help="port of /metrics and /readyz (default 9090)",
    )
    group.add_argument(
        "--listen",
        default="0.0.0.0",
        help="address of /metrics, /readyz and /healthz (default 0.0.0.0: the pod's probes)",
    )
    group.add_argument(
        "--health-port", type=int, default=8080, help="port of kopf's /healthz (default 8080)"
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Validate the parsed flags into Settings; every problem is a ConfigError."""
    get = vars(args).get
    try:
        thresholds = (
            Thresholds(
                min_requests=args.min_requests,
                max_success_drop=args.max_success_drop,
                max_p99_ratio=args.max_p99_ratio,
                p99_slack_seconds=args.p99_slack,
                max_class_drift=args.max_class_drift,
            )
            if hasattr(args, "min_requests")
            else Thresholds()
        )
        schedule = (
            Schedule(
                steps=Schedule.parse_steps(args.steps),
                soak_seconds=args.soak,
                interval_seconds=args.interval,
                step_timeout_seconds=args.step_timeout,
            )
            if hasattr(args, "steps")
            else Schedule()
        )
        window = queries.validate_window(get("window") or "5m")
        match = str(get("match") or "")
        extra_matchers = queries.validate_matchers(match) if match.strip() else ""
    except ValueError as e:
        raise ConfigError(str(e)) from e
    raw_percent = get("percent")
    percent = 10 if raw_percent is None else int(raw_percent)
    if not 1 <= percent <= 99:
        raise ConfigError(f"--percent must be within 1..99 (100 is `promote`), got {percent}")
    if float(get("ready_timeout") or 0) < 0:
        raise ConfigError(f"--ready-timeout must be >= 0 seconds, got {get('ready_timeout')}")
    version = get("version")
    if version is not None and not is_version_number(str(version)):
        raise ConfigError(f"--version must be a registry version number, got {version!r}")
    alias = get("alias")
    version_ref = version or (alias.lstrip("@") if alias else None)
    if args.command in {"start", "auto"} and version_ref is None:
        version_ref = CHALLENGER
    if args.command == "analyze" and get("stable") is not None and get("canary") is None:
        raise ConfigError("--stable needs --canary (or give neither to read the cluster)")
    target = str(get("target") or KUBERNETES)
    if target not in TARGETS:
        raise ConfigError(
            f"--target (or ROLLOUT_TARGET) must be one of {', '.join(TARGETS)}, got {target!r}"
        )
    model_name = str(args.model_name).strip()
    if not model_name:
        raise ConfigError("--model-name is empty")
    return Settings(
        command=args.command,
        model_name=model_name,
        tracking_uri=args.tracking_uri,
        prometheus_url=args.prometheus_url,
        kube=KubeSettings(
            name=args.isvc or model_name,
            namespace=args.namespace,
            kubeconfig=args.kubeconfig,
            context=args.context,
        ),
        dry_run=bool(args.dry_run),
        thresholds=thresholds,
        window=window,
        extra_matchers=extra_matchers,
        version_ref=version_ref,
        percent=percent,
        stable_ref=get("stable"),
        canary_ref=get("canary"),
        reason=str(get("reason") or "rolled back by the operator"),
        allow_rejected=bool(get("allow_rejected")),
        schedule=schedule,
        poll_seconds=float(get("poll") or 30.0),
        grace_seconds=float(getattr(args, "grace", 120.0)),
        ready_timeout_seconds=float(getattr(args, "ready_timeout", 300.0)),
        controller_isvc=args.isvc if args.command == "controller" else None,
        controller_listen=str(get("listen") or "0.0.0.0"),
        controller_metrics_port=int(get("metrics_port") or 9090),
        controller_health_port=int(get("health_port") or 8080),
        target=target,
        local_dir=str(get("local_dir") or DEFAULT_LOCAL_DIR),
    )
