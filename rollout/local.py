"""`--target local`: the rollout against the local cluster `make demo` keeps in a folder.

The local cluster (contract/local_cluster.py) has the API server's semantics the rollout
relies on (resourceVersion preconditions, generation, dry run, the status subresource),
so every verb and the controller run the same code as on Kubernetes: the same reads,
refusals, merge patches and registry tags. Only the transport differs, and its errors
map to the rollout's exactly as kube.py maps the API server's HTTP statuses: not found
(404) is a ConfigError, a conflict (409) a ConflictError, anything else an
UnreachableError. The folder has one namespace: the one its objects name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from contract.local_cluster import (
    INFERENCE_SERVICES,
    LEASES,
    AlreadyExists,
    Conflict,
    LocalCluster,
    LocalClusterError,
    NotFound,
)
from rollout import isvc
from rollout.errors import ConfigError, ConflictError, UnreachableError
from rollout.kube import event_body
from rollout.lock import CONFLICT, NOT_FOUND, Lease, LeaseStore

logger = logging.getLogger(__name__)

RUN_THE_DEMO = "run make demo first (it creates the local cluster and its InferenceService)"
FALLBACK_NAMESPACE = "default"

T = TypeVar("T")


def connect_local(local_dir: str | Path, name: str) -> LocalInferenceServices:
    """The InferenceService `name` in the local cluster at `local_dir`; refused with the
    path when the folder or the object is not there."""
    folder = Path(local_dir)
    if not folder.is_dir():
        raise ConfigError(f"no local cluster at {folder} (--local-dir); {RUN_THE_DEMO}")
    return LocalInferenceServices(LocalCluster(folder), name)


class LocalInferenceServices:
    """GET and merge-patch of one InferenceService in the local cluster (kube.py's surface)."""

    def __init__(self, cluster: LocalCluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.namespace = FALLBACK_NAMESPACE
        try:
            stored = cluster.get(INFERENCE_SERVICES, name)
            self.namespace = str(stored["metadata"].get("namespace") or FALLBACK_NAMESPACE)
        except LocalClusterError:
            pass  # get() reports it, with the path, when the rollout reads it

    @property
    def path(self) -> str:
        return str(self.cluster.folder / INFERENCE_SERVICES / f"{self.name}.json")

    def describe(self) -> str:
        return (
            f"InferenceService {self.namespace}/{self.name} (local cluster {self.cluster.folder})"
        )

    def get(self) -> isvc.Json:
        return self._call("read", lambda: self.cluster.get(INFERENCE_SERVICES, self.name))

    def patch(self, body: isvc.Json, *, dry_run: bool = False) -> isvc.Json:
        logger.info(
            "PATCH%s %s %s",
            " (dry run)" if dry_run else "",
            self.path,
            json.dumps(body, sort_keys=True),
        )
        return self._call(
            "patch",
            lambda: self.cluster.merge_patch(INFERENCE_SERVICES, self.name, body, dry_run=dry_run),
        )

    def post_event(self, obj: isvc.Json, kind: str, reason: str, message: str) -> None:
        """The Event kube.py would create, appended to the folder's events.jsonl."""
        self._call(
            "create an Event on",
            lambda: self.cluster.post_event(event_body(obj, kind, reason, message)),
        )

    def leases(self) -> LeaseStore:
        return LocalLeases(self.cluster, self.namespace)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except NotFound as e:
            raise ConfigError(
                f"{self.describe()} not found: no {self.path}; check --isvc and --local-dir, "
                f"or {RUN_THE_DEMO}"
            ) from e
        except (Conflict, AlreadyExists) as e:
            raise ConflictError(f"{self.describe()} changed while we patched it ({e})") from e
        except (LocalClusterError, OSError) as e:
            raise UnreachableError(f"could not {what} {self.describe()}: {e}") from e


class LocalLeases:
    """The local cluster's `leases`, answering as the API server does (lock.LeaseStore)."""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace

    def read(self, name: str) -> Lease | int:
        return self._call("read", name, lambda: self.cluster.get(LEASES, name))

    def create(self, body: Lease, *, dry_run: bool) -> Lease | int:
        name = str(body["metadata"]["name"])
        return self._call(
            "create", name, lambda: self.cluster.create(LEASES, body, dry_run=dry_run)
        )

    def replace(self, name: str, body: Lease, *, dry_run: bool) -> Lease | int:
        return self._call(
            "replace", name, lambda: self.cluster.replace(LEASES, name, body, dry_run=dry_run)
        )

    def delete(self, name: str, resource_version: str) -> Lease | int:
        def delete() -> Lease:
            self.cluster.delete(LEASES, name, resource_version=resource_version)
            return {}

        return self._call("release", name, delete)

    def _call(self, what: str, name: str, fn: Callable[[], Lease]) -> Lease | int:
        try:
            return fn()
        except NotFound:
            return NOT_FOUND
        except (Conflict, AlreadyExists):
            return CONFLICT
        except (LocalClusterError, OSError) as e:
            raise UnreachableError(
                f"could not {what} Lease {self.namespace}/{name} in the local cluster "
                f"{self.cluster.folder}: {e}"
            ) from e
