"""Everything the Job asks of MLflow: wait for it, find `@champion`, register a version,
tag it and move aliases. Aliases only: registry stages are deprecated.

Registration is honest and idempotent (docs/training.md, "Registration"):

- a version that passed the gates is created `gate_status=pending`, and tagged `passed`
  (and described so) only once its aliases moved; a rejected one is `rejected` from the
  start, since nothing is left to move;
- a Job's retry recognises its own earlier attempt by the attempt key (`attempt_key`),
  a hash of the Job's identity (`TRAINING_JOB_UID`, the uid Kubernetes gives every pod
  of one Job), the data's hash and the settings: it finishes that attempt's version
  instead of registering another. Without a Job identity every run is a new attempt;
- every MLflow call runs inside `step(...)`, so a failure exits 4 naming the step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import requests

from contract import mlflow_client, registry_tags, uris
from contract.uris import CHALLENGER, CHAMPION
from training.errors import RegistryUnavailable

logger = logging.getLogger(__name__)

PLAN_ARTIFACT = "registration.json"
"""What an attempt means to do once its version exists, logged to its run before the
version is created: a retry reads it to finish the same registration."""


def limit_client_retries() -> None:
    """MLflow's client retries a dead server for minutes by default; the Job has its own
    deadline, so keep the client's patience short unless the user set it."""
    mlflow_client.DEFAULT.apply()


@contextmanager
def step(what: str, tracking_uri: str) -> Iterator[None]:
    """Run MLflow calls as one named step: any MLflow or HTTP failure inside becomes
    `RegistryUnavailable` (exit 4) saying which step failed, in one line."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as e:
        raise RegistryUnavailable(
            f"MLflow at {tracking_uri} failed to {what}: {mlflow_client.gist(e.message)}"
        ) from e
    except requests.RequestException as e:
        raise RegistryUnavailable(
            f"MLflow at {tracking_uri} failed to {what}: {mlflow_client.gist(str(e))}"
        ) from e


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


def attempt_key(job_uid: str, data_sha256: str, settings: Mapping[str, Any]) -> str | None:
    """The key every retry of one Job shares, and no other run: None without a Job
    identity (a local run is always a new attempt)."""
    if not job_uid:
        return None
    blob = json.dumps(
        {"job": job_uid, "data": data_sha256, "settings": settings}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class EarlierAttempt:
    """A version an earlier attempt of this Job created, and that attempt's run."""

    version: RegisteredVersion
    run_id: str
    gate_status: str


def find_attempt(client: Any, model_name: str, key: str) -> EarlierAttempt | None:
    """The version an earlier attempt with this key created, if it got that far."""
    found = client.search_model_versions(
        f"name = '{model_name}' and tags.{registry_tags.ATTEMPT_KEY} = '{key}'"
    )
    if not found:
        return None
    # One attempt creates one version; should a race have made two, finish the first.
    first = min(found, key=lambda v: int(v.version))
    return EarlierAttempt(
        RegisteredVersion(model_name, str(first.version)),
        str(first.run_id or ""),
        str((first.tags or {}).get(registry_tags.GATE_STATUS, registry_tags.GATE_PENDING)),
    )


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


def create_version(
    client: Any, model_uri: str, model_name: str, tags: dict[str, str]
) -> RegisteredVersion:
    """A new version of `model_name` (the registered model is created if need be), with
    its tags set in the same call: a version never exists without them."""
    import mlflow

    result = mlflow.register_model(model_uri, model_name, tags=tags)
    return RegisteredVersion(model_name, str(result.version))


def aliases_to_move(client: Any, version: RegisteredVersion) -> list[str]:
    """`@challenger`, and `@champion` while there is none (or it is this version)."""
    champion = current_champion(client, version.name)
    if champion is None or champion == version:
        return [CHALLENGER, CHAMPION]
    return [CHALLENGER]


def set_aliases(client: Any, version: RegisteredVersion, aliases: list[str]) -> None:
    for alias in aliases:
        client.set_registered_model_alias(version.name, alias, version.version)
