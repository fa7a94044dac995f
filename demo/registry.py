"""The two registry questions the demo asks, over MLflow's REST API (importing mlflow would
add a second and more to every `make demo`)."""

from __future__ import annotations

import requests

from demo.processes import DemoError


def _get(tracking_uri: str, path: str, params: dict[str, str]) -> requests.Response:
    """One GET of MLflow's REST API; an unreachable server is a DemoError."""
    try:
        return requests.get(f"{tracking_uri}/api/2.0/mlflow/{path}", params=params, timeout=10)
    except requests.RequestException as e:
        raise DemoError(f"the MLflow server at {tracking_uri} did not answer: {e}") from e


def alias_version(tracking_uri: str, model_name: str, alias: str) -> str | None:
    """The version `@alias` points at, or None when the model or the alias does not exist."""
    response = _get(tracking_uri, "registered-models/alias", {"name": model_name, "alias": alias})
    if response.status_code == 200:
        return str(response.json()["model_version"]["version"])
    # A missing model is a 404, a missing alias of an existing model a 400.
    if response.status_code in (400, 404) and "not found" in response.text:
        return None
    raise DemoError(
        f"MLflow answered {response.status_code} for {model_name}@{alias}: {response.text[:200]}"
    )


def version_tags(tracking_uri: str, model_name: str, version: str) -> dict[str, str]:
    """The tags of one model version ({} when it does not exist)."""
    response = _get(tracking_uri, "model-versions/get", {"name": model_name, "version": version})
    if response.status_code != 200:
        return {}
    tags = response.json().get("model_version", {}).get("tags", [])
    return {str(t["key"]): str(t.get("value", "")) for t in tags}


def latest_versions(tracking_uri: str, model_name: str) -> list[str]:
    """Every version number of the model, oldest first."""
    response = _get(
        tracking_uri,
        "model-versions/search",
        {"filter": f"name='{model_name}'", "max_results": "1000"},
    )
    if response.status_code != 200:
        return []
    versions = [str(v["version"]) for v in response.json().get("model_versions", [])]
    return sorted(versions, key=int)
