"""One configuration of the MLflow client for every component, and the error codes
MLflow answers for something that does not exist.

MLflow's client (3.x, `mlflow/environment_variables.py`) retries a failing server 7
times with a backoff factor of 2 and waits 120 s per request by default: minutes before
a dead server is reported. Every component has a deadline or a retry loop of its own, so
the project sets a shorter default set, once, here:

| variable | default here | MLflow's |
|---|---|---|
| `MLFLOW_HTTP_REQUEST_MAX_RETRIES` | 2 | 7 |
| `MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR` | 1 | 2 |
| `MLFLOW_HTTP_REQUEST_TIMEOUT` | 30 s | 120 s |

A variable the user set always wins. The predictor is the one caller that changes two of
them, through `ClientConfig.for_attempt`: its loader retries with backoff and logs what
it waits for, so one attempt makes no retries of its own, and each request waits
`--registry_timeout_seconds`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, replace

MAX_RETRIES_VARIABLE = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
BACKOFF_FACTOR_VARIABLE = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
TIMEOUT_VARIABLE = "MLFLOW_HTTP_REQUEST_TIMEOUT"
VARIABLES = (MAX_RETRIES_VARIABLE, BACKOFF_FACTOR_VARIABLE, TIMEOUT_VARIABLE)

RESOURCE_DOES_NOT_EXIST = "RESOURCE_DOES_NOT_EXIST"
NOT_FOUND_CODES = frozenset({RESOURCE_DOES_NOT_EXIST, "INVALID_PARAMETER_VALUE"})
"""What MLflow answers for a model, version or alias that does not exist: a missing
alias is `INVALID_PARAMETER_VALUE` ("Registered model alias ... not found"), the others
`RESOURCE_DOES_NOT_EXIST`."""


def gist(message: str, limit: int = 240) -> str:
    """One line of an MLflow error: its connection errors run to many lines of urllib3
    detail, and a log line or an exit message needs the gist."""
    for marker in ("Connection refused", "Name or service not known", "timed out"):
        if marker in message:
            return marker.lower()
    first = message.strip().splitlines()[0] if message.strip() else message
    return first if len(first) <= limit else first[: limit - 3] + "..."


def is_not_found(error: BaseException) -> bool:
    """An `MlflowException` saying the model, version or alias does not exist."""
    return str(getattr(error, "error_code", "")) in NOT_FOUND_CODES


@dataclass(frozen=True)
class ClientConfig:
    """The MLflow client's retry and timeout settings, as its environment variables."""

    max_retries: int = 2
    backoff_factor: int = 1  # MLflow reads it as an int
    timeout_seconds: int = 30  # MLflow reads it as an int

    def for_attempt(self, timeout_seconds: float) -> ClientConfig:
        """For a caller that retries itself: no client retries, one request's timeout."""
        return replace(self, max_retries=0, timeout_seconds=max(1, round(timeout_seconds)))

    def environment(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The three variables: the user's value where set in `environ`, else ours."""
        environ = os.environ if environ is None else environ
        ours = {
            MAX_RETRIES_VARIABLE: str(self.max_retries),
            BACKOFF_FACTOR_VARIABLE: str(self.backoff_factor),
            TIMEOUT_VARIABLE: str(self.timeout_seconds),
        }
        return {name: environ.get(name, value) for name, value in ours.items()}

    def apply(self, environ: MutableMapping[str, str] | None = None) -> None:
        """Set the variables the user left unset, in this process (MLflow reads them at
        every request)."""
        environ = os.environ if environ is None else environ
        environ.update(self.environment(environ))


DEFAULT = ClientConfig()
