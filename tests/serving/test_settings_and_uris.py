"""Settings from flags and environment, and the registry URIs the predictor accepts."""

from __future__ import annotations

import argparse

import pytest

from serving.errors import ConfigError
from serving.settings import Settings, add_arguments, settings_from_args


def test_a_uri_the_contract_refuses_is_a_configuration_error() -> None:
    env = {"MODEL_URI": "models:/breast-cancer/latest", "MLFLOW_TRACKING_URI": "http://m:5000"}

    with pytest.raises(ConfigError, match="pin a version or use an alias"):
        parse([], env)


def parse(argv: list[str], env: dict[str, str]) -> Settings:
    from kserve import model_server

    parser = argparse.ArgumentParser(parents=[model_server.parser])
    return settings_from_args(add_arguments(parser, env).parse_args(argv))


def test_settings_come_from_the_environment() -> None:
    env = {
        "MODEL_URI": "models:/iris@champion",
        "MODEL_NAME": "iris",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "MAX_BATCH_SIZE": "16",
        "MAX_BODY_BYTES": "65536",
        "ACCESS_LOG": "true",
    }

    settings = parse([], env)

    assert (settings.model_uri, settings.model_name, settings.tracking_uri) == (
        "models:/iris@champion",
        "iris",
        "http://mlflow:5000",
    )
    assert (settings.max_batch_size, settings.max_body_bytes, settings.access_log) == (
        16,
        65536,
        True,
    )
    assert (settings.http_port, settings.grpc_port) == (8080, 8081)


def test_flags_win_over_the_environment_and_kserve_flags_are_kept() -> None:
    env = {"MODEL_URI": "models:/iris@champion", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    argv = [
        "--model_uri", "models:/breast-cancer/2",
        "--model_name", "bc",
        "--http_port", "9000",
        "--grpc_port", "9001",
        "--max_batch_size", "8",
    ]  # fmt: skip

    settings = parse(argv, env)

    assert (settings.model_uri, settings.model_name, settings.max_batch_size) == (
        "models:/breast-cancer/2",
        "bc",
        8,
    )
    assert (settings.http_port, settings.grpc_port) == (9000, 9001)


def test_the_predictor_runs_asyncio_s_loop_unless_told_otherwise() -> None:
    from kserve import model_server

    from serving.__main__ import build_parser

    required = ["--model_uri", "models:/x/1", "--tracking_uri", "http://m:5000"]
    parser = build_parser()

    def loop(*flags: str) -> str:
        return settings_from_args(parser.parse_args([*required, *flags])).event_loop

    assert loop() == "asyncio"
    assert loop("--event-loop", "uvloop") == "uvloop"
    assert model_server.parser.parse_args([]).event_loop == "auto"  # KServe's own is untouched


def test_uvloop_asked_for_and_not_installed_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "uvloop" else found(name)
    )
    required = {"model_uri": "models:/x/1", "tracking_uri": "http://m:5000"}

    with pytest.raises(ConfigError, match="--event-loop uvloop: uvloop is not installed"):
        Settings(**required, event_loop="uvloop")
    assert Settings(**required, event_loop="auto").event_loop == "auto"


def test_the_served_name_defaults_to_breast_cancer() -> None:
    settings = parse([], {"MODEL_URI": "models:/x/1", "MLFLOW_TRACKING_URI": "http://m:5000"})

    assert settings.model_name == "breast-cancer"


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {"MLFLOW_TRACKING_URI": "http://m:5000"}, "set MODEL_URI"),
        ([], {"MODEL_URI": "models:/x/1"}, "set MLFLOW_TRACKING_URI"),
        (
            ["--workers", "2"],
            {"MODEL_URI": "models:/x/1", "MLFLOW_TRACKING_URI": "http://m"},
            "one worker per process",
        ),
        (
            [],
            {"MODEL_URI": "models:/x/1", "MLFLOW_TRACKING_URI": "http://m", "MAX_BATCH_SIZE": "0"},
            "MAX_BATCH_SIZE must be at least 1",
        ),
        (
            [],
            {"MODEL_URI": "models:/x/1", "MLFLOW_TRACKING_URI": "http://m", "HOST": "http://h:1"},
            "HOST 'http://h:1' must be an IP address or a host name",
        ),
        (["--max_header_bytes", "100"], {}, "MAX_HEADER_BYTES must be at least 1024"),
        (["--max_header_count", "2"], {}, "MAX_HEADER_COUNT must be at least 8"),
        (["--drain_seconds", "45"], {}, "need 0 <= DRAIN_SECONDS < the grace period"),
        (["--grpc_max_pending_calls", "0"], {}, "GRPC_MAX_PENDING_CALLS must be at least 1"),
        (
            ["--load_retry_invalid_max_seconds", "1"],
            {},
            "need LOAD_RETRY_INVALID_MAX_SECONDS >= LOAD_RETRY_MAX_SECONDS",
        ),
        (
            [],
            {"MODEL_URI": "models:/x/1", "MLFLOW_TRACKING_URI": "http://m", "MODEL_RUNTIME": "tf"},
            "MODEL_RUNTIME 'tf': choose from auto, onnx, sklearn",
        ),
    ],
)
def test_unusable_settings_are_configuration_errors(
    argv: list[str], env: dict[str, str], expected: str
) -> None:
    base = {"MODEL_URI": "models:/x/1", "MLFLOW_TRACKING_URI": "http://m"} if not env else {}
    with pytest.raises(ConfigError, match=expected):
        parse(argv, {**base, **env})


def test_a_malformed_number_in_the_environment_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="MAX_BODY_BYTES='lots' is not a valid int"):
        parse([], {"MAX_BODY_BYTES": "lots"})


def test_grpc_message_limit_is_the_smaller_of_body_and_kserve_limits() -> None:
    base = {"model_uri": "models:/x/1", "tracking_uri": "http://m"}

    assert Settings(**base, max_body_bytes=4096).grpc_receive_limit == 4096
    assert (
        Settings(**base, max_body_bytes=4096, grpc_max_message_bytes=2048).grpc_receive_limit
        == 2048
    )


@pytest.mark.parametrize(
    ("argv", "env", "host", "grpc"),
    [
        ([], {}, None, "[::]:8081"),
        ([], {"HOST": "127.0.0.1"}, "127.0.0.1", "127.0.0.1:8081"),
        (["--host", "::1"], {"HOST": "127.0.0.1"}, "::1", "[::1]:8081"),
        (["--host", "predictor.local"], {}, "predictor.local", "predictor.local:8081"),
    ],
)
def test_host_comes_from_the_flag_or_the_environment_and_applies_to_grpc(
    argv: list[str], env: dict[str, str], host: str | None, grpc: str
) -> None:
    from serving.settings import grpc_address

    base = {"MODEL_URI": "models:/x/1", "MLFLOW_TRACKING_URI": "http://m"}
    settings = parse(argv, {**base, **env})

    assert settings.host == host
    assert grpc_address(settings.host, settings.grpc_port) == grpc


def test_the_model_runtime_is_auto_unless_the_flag_or_the_environment_says() -> None:
    from serving.loader import RUNTIME_CHOICES
    from serving.settings import MODEL_RUNTIMES

    env = {"MODEL_URI": "models:/x/1", "MLFLOW_TRACKING_URI": "http://m"}
    assert parse([], env).model_runtime == "auto"
    assert parse([], {**env, "MODEL_RUNTIME": "sklearn"}).model_runtime == "sklearn"
    assert parse(
        ["--model_runtime", "onnx"], {**env, "MODEL_RUNTIME": "sklearn"}
    ).model_runtime == ("onnx")
    assert MODEL_RUNTIMES == RUNTIME_CHOICES
