"""One flag style everywhere: `--tracking-uri` and `--tracking_uri` alike, in training,
the predictor and the rollout (contract/flags.py); and the predictor's --help lists only
the flags that apply, each default once and true."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from contract.flags import FlagParser
from tests.support import REPO_ROOT


def parser() -> FlagParser:
    built = FlagParser(prog="t", exit_on_error=False)
    built.add_argument("--tracking-uri")
    built.add_argument("--http_port", type=int)
    built.add_argument("--dry-run", action="store_true")
    commands = built.add_subparsers(dest="command")
    sub = commands.add_parser("start")
    sub.add_argument("--min-requests", type=int)
    return built


@pytest.mark.parametrize(
    "argv",
    [
        ["--tracking-uri", "u", "--http_port", "9"],
        ["--tracking_uri", "u", "--http-port", "9"],
        ["--tracking_uri=u", "--http-port=9"],
    ],
)
def test_either_spelling_of_a_flag_is_the_same_flag(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    assert (args.tracking_uri, args.http_port) == ("u", 9)


def test_sub_commands_take_either_spelling_too() -> None:
    args = parser().parse_args(["--dry_run", "start", "--min_requests", "5"])
    assert (args.dry_run, args.command, args.min_requests) == (True, "start", 5)


def test_unknown_flags_and_values_after_a_double_dash_stay_as_they_are() -> None:
    built = parser()
    assert built.respell(["--nope_x", "--", "--tracking_uri"]) == [
        "--nope_x",
        "--",
        "--tracking_uri",
    ]
    with pytest.raises(SystemExit):
        built.parse_args(["--nope_x"])


def test_training_and_the_rollout_take_the_predictors_spelling() -> None:
    from rollout.settings import build_parser as rollout_parser
    from training.settings import build_parser as training_parser

    training = training_parser({}).parse_args(
        ["--tracking_uri", "http://m:5000", "--cv_folds", "3"]
    )
    assert (training.tracking_uri, training.cv_folds) == ("http://m:5000", 3)
    rollout = rollout_parser({}).parse_args(
        ["analyze", "--tracking_uri", "http://m:5000", "--prometheus_url", "http://p:9090",
         "--min_requests", "7", "--canary", "2"]
    )  # fmt: skip
    assert (rollout.tracking_uri, rollout.prometheus_url, rollout.min_requests) == (
        "http://m:5000",
        "http://p:9090",
        7,
    )


def test_the_predictor_takes_the_training_spelling() -> None:
    from serving.__main__ import build_parser
    from serving.settings import settings_from_args

    args = build_parser().parse_args(
        ["--model-uri", "models:/bc/1", "--tracking-uri", "http://m:5000", "--http-port", "9000",
         "--event_loop", "uvloop", "--max-batch-size", "16"]
    )  # fmt: skip
    settings = settings_from_args(args)
    assert (settings.model_uri, settings.tracking_uri, settings.http_port) == (
        "models:/bc/1",
        "http://m:5000",
        9000,
    )
    assert (settings.event_loop, settings.max_batch_size) == ("uvloop", 16)


@pytest.fixture(scope="module")
def predictor_help() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "serving", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
        timeout=120,
    )
    return done.stdout


def test_the_predictor_help_leaves_out_kserves_transformer_flags(predictor_help: str) -> None:
    for flag in (
        "--predictor_host",
        "--predictor_protocol",
        "--protocol",
        "--predictor_use_ssl",
        "--predictor_request_timeout_seconds",
        "--predictor_request_retries",
        "--enable_predictor_health_check",
        "--enable_latency_logging",  # the predictor turns it off, whatever the flag says
        "--enable_docs_url",
        "--ssl_certfile",
        "--max_asyncio_workers",
    ):
        assert flag not in predictor_help, flag
    for flag in ("--http_port", "--grpc_port", "--model_uri", "--tracking_uri", "--host"):
        assert flag in predictor_help


def test_the_predictor_help_says_each_default_once(predictor_help: str) -> None:
    # One entry per flag: its lines up to the next flag's.
    entries = re.split(r"\n  (?=-)", predictor_help.split("options:", 1)[1])
    for entry in entries:
        assert len(re.findall(r"\bdefault\b", entry)) <= 1, entry
    assert "(default:" not in predictor_help  # argparse's own suffix, doubling ours
    assert re.search(r"--http_port HTTP_PORT\s+HTTP port [^-]*\(default 8080\)", predictor_help)


def test_hidden_kserve_flags_are_still_accepted_as_before() -> None:
    from serving.__main__ import build_parser

    args = build_parser().parse_args(["--model_uri", "models:/bc/1", "--enable_docs_url", "false"])
    assert args.model_uri == "models:/bc/1"
