"""One MLflow client configuration: its defaults, the user's variables winning, and the
MLflow client actually doing what the variables say (against a real HTTP server)."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from contract import mlflow_client
from contract.mlflow_client import DEFAULT, MAX_RETRIES_VARIABLE, TIMEOUT_VARIABLE, VARIABLES
from tests.support import serving_http


@pytest.fixture
def no_user_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_the_default_set_is_short_and_documented(no_user_settings: None) -> None:
    assert DEFAULT.environment() == {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    }
    assert all(f"`{name}`" in (mlflow_client.__doc__ or "") for name in VARIABLES)


def test_a_variable_the_user_set_wins() -> None:
    environ = {MAX_RETRIES_VARIABLE: "9"}
    DEFAULT.apply(environ)
    assert environ == {**DEFAULT.environment({}), MAX_RETRIES_VARIABLE: "9"}


def test_one_attempt_of_a_caller_that_retries_itself(no_user_settings: None) -> None:
    from serving.registry import client_environment

    attempt = client_environment(7.4)
    assert (attempt[MAX_RETRIES_VARIABLE], attempt[TIMEOUT_VARIABLE]) == ("0", "7")
    assert DEFAULT.for_attempt(0.2).timeout_seconds == 1, "MLflow reads whole seconds"


def test_the_not_found_codes_are_mlflow_s() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2 as codes

    for code in (codes.INVALID_PARAMETER_VALUE, codes.RESOURCE_DOES_NOT_EXIST):
        assert mlflow_client.is_not_found(MlflowException("not found", error_code=code))
    assert not mlflow_client.is_not_found(MlflowException("boom", error_code=codes.INTERNAL_ERROR))
    assert not mlflow_client.is_not_found(ValueError("no error code"))


class _Unavailable(BaseHTTPRequestHandler):
    calls = 0

    def do_GET(self) -> None:
        type(self).calls += 1
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def unavailable_server() -> Iterator[str]:
    _Unavailable.calls = 0
    with serving_http(_Unavailable) as url:
        yield url


def test_mlflow_s_client_retries_as_many_times_as_configured(
    unavailable_server: str, monkeypatch: pytest.MonkeyPatch, no_user_settings: None
) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    DEFAULT.apply()  # the process environment, as each component's entry point does
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")  # a bounded test
    client = MlflowClient(tracking_uri=unavailable_server, registry_uri=unavailable_server)
    with pytest.raises(MlflowException):
        client.get_registered_model("breast-cancer")
    assert _Unavailable.calls == 1 + DEFAULT.max_retries
