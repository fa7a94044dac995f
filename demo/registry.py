"""The two registry questions the demo asks, over MLflow's REST API (importing mlflow would
add a second and more to every `make demo`)."""

from __future__ import annotations

import requests

from demo.processes import DemoError


def alias_version(tracking_uri: str, model_name: str, alias: str) -> str | None:
    """The version `@alias` points at, or None when the model or the alias does not exist."""
    try:
        response = requests.get(
            f"{tracking_uri}/api/2.0/mlflow/registered-models/alias",
            params={"name": model_name, "alias": alias},
            timeout=10,
        )
    except requests.RequestException as e:
        raise DemoError(f"the MLflow server at {tracking_uri} did not answer: {e}") from e
    if response.status_code == 200:
        return str(response.json()["model_version"]["version"])
    # A missing model is a 404, a missing alias of an existing model a 400.
    if response.status_code in (400, 404) and "not found" in response.text:
        return None
    raise DemoError(
        f"MLflow answered {response.status_code} for {model_name}@{alias}: {response.text[:200]}"
    )
