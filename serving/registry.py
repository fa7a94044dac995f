"""Find a model in the MLflow Model Registry and download it.

`models:/NAME@ALIAS` is resolved to the concrete version the alias points at *now*;
what is served is always `models:/NAME/VERSION`, recorded in metrics and responses.

The predictor runs `fetch` in a short-lived child process (`FetchProcess`): MLflow's
client is the heaviest import of all (~27 MB resident, about a second of CPU) and only
the load needs it. In a child it costs the server no memory, and it runs on another
core while the server imports scikit-learn.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract import mlflow_client
from contract.uris import ModelRef, parse_model_uri
from serving.errors import (
    InvalidModel,
    LoadError,
    ModelVersionMissing,
    RegistryUnavailable,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchedModel:
    """A registry version downloaded to a local folder that holds its `MLmodel` file."""

    ref: ModelRef
    version: str
    run_id: str
    path: Path

    @property
    def uri(self) -> str:
        return self.ref.version_uri(self.version)


def client_environment(timeout_seconds: float) -> dict[str, str]:
    """MLflow client settings for one load attempt, unless the user set them: the
    loader's retry loop is the retry, so one attempt fails fast (contract/mlflow_client.py)."""
    return mlflow_client.DEFAULT.for_attempt(timeout_seconds).environment()


def fetch(
    ref: ModelRef, tracking_uri: str, destination: Path, timeout_seconds: float
) -> FetchedModel:
    """Resolve `ref` to a concrete version and download its artifacts below `destination`.

    Raises `RegistryUnavailable` when MLflow does not answer (or fails), and
    `ModelVersionMissing` when the model, version or alias does not exist.
    """
    os.environ.update(client_environment(timeout_seconds))
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if ref.alias:
            found: Any = client.get_model_version_by_alias(ref.name, ref.alias)
        else:
            found = client.get_model_version(ref.name, str(ref.version))
        version = str(found.version)
        # The artifact location, not `models:/NAME/VERSION`: MLflow resolves the latter
        # against its process-wide default registry, whatever registry_uri it is given.
        location = client.get_model_version_download_uri(ref.name, version)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=location, dst_path=str(destination), tracking_uri=tracking_uri
        )
    except MlflowException as e:
        if mlflow_client.is_not_found(e):
            raise ModelVersionMissing(
                f"{ref.describe()} does not exist in the registry at {tracking_uri} "
                f"({mlflow_client.gist(e.message)})"
            ) from e
        raise RegistryUnavailable(
            f"the registry at {tracking_uri} failed: {mlflow_client.gist(e.message)}"
        ) from e
    except OSError as e:  # requests' errors are OSErrors too
        raise RegistryUnavailable(
            f"the registry at {tracking_uri} failed: {mlflow_client.gist(str(e))}"
        ) from e
    return FetchedModel(ref=ref, version=version, run_id=str(found.run_id or ""), path=Path(local))


# --- the child process ----------------------------------------------------------------

REQUEST_VARIABLE = "SERVING_FETCH_REQUEST"
_ERRORS: dict[str, type[LoadError]] = {
    cls.__name__: cls for cls in (RegistryUnavailable, ModelVersionMissing, InvalidModel)
}


class FetchProcess:
    """`fetch` in a child process (`python -m serving.registry`), started at once.

    The request goes in as JSON in an environment variable (so the child starts work
    without waiting to be spoken to) and the answer comes back as one JSON line on
    stdout: nothing reads argv, nothing is pickled.
    """

    def __init__(
        self, ref: ModelRef, tracking_uri: str, destination: Path, timeout_seconds: float
    ) -> None:
        self.ref = ref
        self.tracking_uri = tracking_uri
        # One attempt may make several calls and download several files.
        self.deadline = max(60.0, 6 * timeout_seconds)
        package_root = str(Path(__file__).resolve().parent.parent)
        python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        request = {
            "uri": ref.uri,
            "tracking_uri": tracking_uri,
            "destination": str(destination),
            "timeout_seconds": timeout_seconds,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving.registry"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={
                **os.environ,
                **client_environment(timeout_seconds),
                "PYTHONPATH": python_path,
                REQUEST_VARIABLE: json.dumps(request),
            },
        )

    def result(self) -> FetchedModel:
        try:
            out, err = self.process.communicate(timeout=self.deadline)
        except subprocess.TimeoutExpired as e:
            self.process.kill()
            self.process.communicate()
            raise RegistryUnavailable(
                f"the registry at {self.tracking_uri} did not deliver {self.ref.uri} "
                f"within {self.deadline:.0f}s"
            ) from e
        lines = out.decode(errors="replace").strip().splitlines()
        try:
            answer = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError) as e:
            detail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise LoadError(
                f"the registry helper exited with {self.process.returncode}: {detail[0]}"
            ) from e
        if "error" in answer:
            raise _ERRORS.get(answer["kind"], LoadError)(answer["error"])
        return FetchedModel(
            ref=self.ref,
            version=answer["version"],
            run_id=answer["run_id"],
            path=Path(answer["path"]),
        )

    def kill(self) -> None:
        """Stop the child; `result()` (in another thread) then returns with an error."""
        if self.process.poll() is None:
            self.process.kill()

    def close(self) -> None:
        """Stop the child if it runs, and reap it (closing its pipes); for a child whose
        result nobody will read."""
        self.kill()
        self.process.communicate()


class Prefetch:
    """The first fetch, started as the process starts: the child imports MLflow and
    downloads on one core while the server imports KServe and scikit-learn on the other.

    It downloads into a temporary folder of its own, which `folder` cleans up when the
    load that takes it over is done with it.
    """

    def __init__(self, ref: ModelRef, tracking_uri: str, timeout_seconds: float) -> None:
        self.key = (ref, tracking_uri, timeout_seconds)
        self.started = time.perf_counter()
        self.folder = tempfile.TemporaryDirectory(prefix="serving-model-")
        self.process = FetchProcess(ref, tracking_uri, Path(self.folder.name), timeout_seconds)

    def fetches(self, ref: ModelRef, tracking_uri: str, timeout_seconds: float) -> bool:
        return self.key == (ref, tracking_uri, timeout_seconds)

    def close(self) -> None:
        """Give it up: stop the child, remove the folder."""
        self.process.close()
        self.folder.cleanup()


def fetch_main() -> int:
    """The child's side of `FetchProcess`."""
    gc.disable()  # a short-lived process: collecting while MLflow imports frees nothing
    from contract import upstream

    upstream.leave_out_imports(placeholders=False)  # MLflow's pandas would import pyarrow
    request = json.loads(os.environ[REQUEST_VARIABLE])
    try:
        fetched = fetch(
            parse_model_uri(request["uri"]),
            request["tracking_uri"],
            Path(request["destination"]),
            float(request["timeout_seconds"]),
        )
    except LoadError as e:
        print(json.dumps({"kind": type(e).__name__, "error": e.message}))
        return 0
    answer = {"version": fetched.version, "run_id": fetched.run_id, "path": str(fetched.path)}
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    code = fetch_main()
    # The answer is out and the downloaded files are closed. The interpreter's teardown,
    # with MLflow loaded, collects every object module by module: about 0.4 s here that
    # the predictor's start would wait for, reading to the end of this process's output.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
