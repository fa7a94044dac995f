"""Shared pieces of the rollout tests: the fake cluster's names and a quick registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

from tests.support import MlflowServer, Process, wait_until

NAMESPACE = "mlops"
TOKEN = "test-token-123"


@dataclass
class RegistryModel:
    tracking_uri: str
    name: str
    client: Any

    def aliases(self) -> dict[str, str]:
        return dict(self.client.get_registered_model(self.name).aliases)

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(self.name, version).tags)


def register_versions(server: MlflowServer, name: str, count: int = 3) -> RegistryModel:
    """`count` versions of a fresh model; @champion=1, @challenger=2.

    The rollout never loads a model, it only moves aliases and tags, so the
    versions point at an (empty) run instead of a trained model: seconds, not minutes.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    client.create_registered_model(name)
    experiment = client.create_experiment(f"rollout-{name}")
    run = client.create_run(experiment)
    for _ in range(count):
        client.create_model_version(
            name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    return RegistryModel(server.url, name, client)


def isvc_path(name: str) -> str:
    return f"/apis/serving.kserve.io/v1beta1/namespaces/{NAMESPACE}/inferenceservices/{name}"


def wait_controller_ready(process: Process, url: str, deadline: float, what: str) -> None:
    """Until the controller's `/readyz` at `url` answers 200; its log if it exits first."""

    def ready() -> bool:
        assert process.alive(), f"the controller exited:\n{process.log()}"
        try:
            return requests.get(f"{url}/readyz", timeout=2).ok
        except requests.ConnectionError:
            return False

    wait_until(ready, deadline, what)
