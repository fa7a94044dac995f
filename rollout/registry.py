"""The MLflow Model Registry side: aliases, versions, and the tags a rollout leaves.

`mlflow` is imported when a `Registry` is made, not with this module: it costs
seconds, and `analyze` with explicit version numbers never needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from contract import mlflow_client, registry_tags
from contract.uris import CHAMPION, is_version_number
from rollout.errors import ConfigError, RefusedError, UnreachableError

logger = logging.getLogger(__name__)


class Registry:
    """One registered model, through the MLflow client."""

    def __init__(self, tracking_uri: str, model_name: str) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self._client: Any = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args)
        except MlflowException as e:
            if mlflow_client.is_not_found(e):
                raise
            raise UnreachableError(
                f"MLflow at {self.tracking_uri} failed to {what}: {e.message}"
            ) from e

    def aliases(self) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            model = self._call(
                "read the registered model", self._client.get_registered_model, self.model_name
            )
        except MlflowException as e:
            raise ConfigError(
                f"registered model {self.model_name!r} does not exist in {self.tracking_uri}; "
                "train and register a version first (make train-local / the training Job)"
            ) from e
        return {str(k): str(v) for k, v in (model.aliases or {}).items()}

    def resolve(self, ref: str, aliases: Mapping[str, str] | None = None) -> str:
        """A version number for `ref` (a number, `alias` or `@alias`), checked to exist.
        `aliases`, when the caller read them already, saves reading them again."""
        if is_version_number(ref):
            self.version_tags(ref)  # refuses a version that does not exist
            return ref
        alias = ref.lstrip("@")
        known = self.aliases() if aliases is None else aliases
        version = known.get(alias)
        if version is None:
            listed = ", ".join(f"@{k}={v}" for k, v in sorted(known.items())) or "none"
            raise RefusedError(
                f"model {self.model_name!r} has no alias @{alias} (aliases: {listed})"
            )
        return version

    def version_tags(self, version: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            found = self._call(
                f"read version {version}", self._client.get_model_version, self.model_name, version
            )
        except MlflowException as e:
            raise RefusedError(
                f"version {version} of model {self.model_name!r} does not exist in "
                f"{self.tracking_uri}; `python -m rollout status` lists the aliases"
            ) from e
        return {str(k): str(v) for k, v in (found.tags or {}).items()}

    def set_champion(self, version: str) -> None:
        self._call(
            f"move @{CHAMPION} to version {version}",
            self._client.set_registered_model_alias,
            self.model_name,
            CHAMPION,
            version,
        )
        logger.info("@%s of %s now points at version %s", CHAMPION, self.model_name, version)

    def tag_version(self, version: str, status: str, reason: str) -> None:
        tags = {
            registry_tags.ROLLOUT_STATUS: status,
            registry_tags.ROLLOUT_REASON: reason[: registry_tags.VALUE_LIMIT],
            registry_tags.ROLLOUT_TIME: datetime.now(UTC).isoformat(timespec="seconds"),
        }
        for key, value in tags.items():
            self._call(
                f"tag version {version}",
                self._client.set_model_version_tag,
                self.model_name,
                version,
                key,
                value,
            )

    def tag_decision(self, version: str, text: str) -> None:
        """One tag with the controller's latest decision, so the registry shows it too."""
        self._call(
            f"tag version {version}",
            self._client.set_model_version_tag,
            self.model_name,
            version,
            registry_tags.ROLLOUT_DECISION,
            f"{datetime.now(UTC).isoformat(timespec='seconds')} {text}"[
                : registry_tags.VALUE_LIMIT
            ],
        )

    def input_signature(self, version: str) -> Any:
        """The `signature.inputs` of the version's MLmodel file (parsed JSON), or None when
        it has none (or no MLmodel file at all); UnreachableError when MLflow fails."""
        import json
        import tempfile
        from pathlib import Path

        import mlflow.artifacts
        import yaml
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory(prefix="rollout-mlmodel-") as folder:
            try:
                # The version's own artifact location: a `models:/NAME/VERSION` URI would be
                # resolved against the process-wide registry URI, not this client's.
                location = self._client.get_model_version_download_uri(self.model_name, version)
                path = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{str(location).rstrip('/')}/MLmodel",
                    dst_path=folder,
                    tracking_uri=self.tracking_uri,
                )
                mlmodel = yaml.safe_load(Path(path).read_text())
            except MlflowException as e:
                if str(getattr(e, "error_code", "")) == mlflow_client.RESOURCE_DOES_NOT_EXIST:
                    return None
                raise UnreachableError(
                    f"could not read the MLmodel file of version {version} of "
                    f"{self.model_name!r} from {self.tracking_uri}: {e.message}"
                ) from e
            except (OSError, yaml.YAMLError) as e:
                raise UnreachableError(
                    f"could not read the MLmodel file of version {version} of "
                    f"{self.model_name!r} from {self.tracking_uri}: {e}"
                ) from e
        inputs = ((mlmodel or {}).get("signature") or {}).get("inputs")
        return json.loads(inputs) if isinstance(inputs, str) else inputs
