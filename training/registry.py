"""Everything the Job asks of MLflow: wait for it, find `@champion`, register a version,
tag it and move aliases. Aliases only: registry stages are deprecated."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import requests

from contract import mlflow_client, uris
from contract.uris import CHAMPION
from training.errors import RegistryUnavailable

logger = logging.getLogger(__name__)


def limit_client_retries() -> None:
    """MLflow's client retries a dead server for minutes by default; the Job has its own
    deadline, so keep the client's patience short unless the user set it."""
    mlflow_client.DEFAULT.apply()


def wait_for_registry(tracking_uri: str, timeout: float) -> None:
    """Poll the server's /health with exponential backoff until it answers or `timeout`
    passes (a Job may start before its MLflow Deployment is ready)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return  # a local store (file:, sqlite:) has nothing to wait for
    url = tracking_uri.rstrip("/") + "/health"
    deadline = time.monotonic() + timeout
    delay = 0.5
    attempt = 0
    while True:
        attempt += 1
        try:
            response = requests.get(url, timeout=min(5.0, timeout))
            if response.status_code == 200:
                return
            problem = f"HTTP {response.status_code}"
        except requests.RequestException as e:
            problem = type(e).__name__
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RegistryUnavailable(
                f"MLflow at {tracking_uri} did not answer within {timeout:.0f}s "
                f"({attempt} attempts, last: {problem}); check MLFLOW_TRACKING_URI "
                "and that the server is running"
            )
        logger.warning(
            "waiting for MLflow at %s (%s); retrying in %.1fs", tracking_uri, problem, delay
        )
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 10.0)


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str

    @property
    def uri(self) -> str:
        return uris.version_uri(self.name, self.version)


def current_champion(client: Any, model_name: str) -> RegisteredVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as e:
        if mlflow_client.is_not_found(e):
            return None
        raise
    return RegisteredVersion(model_name, str(version.version))


def load_registered_estimator(version: RegisteredVersion) -> Any:
    """Download a registered version and load its estimator natively (skops allow-list)."""
    import mlflow.artifacts

    from contract.model_format import load_estimator

    with tempfile.TemporaryDirectory() as folder:
        local = mlflow.artifacts.download_artifacts(artifact_uri=version.uri, dst_path=folder)
        return load_estimator(local)


def register(
    client: Any,
    model_uri: str,
    model_name: str,
    tags: dict[str, str],
    description: str,
) -> RegisteredVersion:
    import mlflow

    result = mlflow.register_model(model_uri, model_name, tags=tags)
    version = RegisteredVersion(model_name, str(result.version))
    client.update_model_version(model_name, version.version, description=description)
    return version


def set_aliases(client: Any, version: RegisteredVersion, aliases: list[str]) -> None:
    for alias in aliases:
        client.set_registered_model_alias(version.name, alias, version.version)
