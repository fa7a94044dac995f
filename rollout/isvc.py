"""The InferenceService as the rollout sees it: what it reads, and the patches it sends.

Pure functions over the object's JSON, so the exact patch bodies are unit-tested.

Every patch is a JSON merge patch (RFC 7386, `application/merge-patch+json`):
custom resources do not support strategic merge, and a merge patch replaces a list
whole, so a patch that changes `MODEL_URI` carries the predictor's complete
`containers` list, copied from the object just read with only that value changed.
Each patch also carries `metadata.resourceVersion`: if anything changed the object
since we read it, the API server answers 409 instead of letting our copy of the
list overwrite the other change.

How KServe (Knative mode) reads the fields (ksvc_reconciler.go and
inference_service_status.go): with `canaryTrafficPercent` set and a revision
rolled out before, the latest ready revision gets that share and the last
rolled-out revision (`status.components.predictor.latestRolledoutRevision`, tag
`prev`) the rest; removing the field sends 100 % to the latest revision (promote);
0 sends all traffic back to the last rolled-out revision (roll back).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

# Re-exported: the --dry-run previews apply it as the API server (or the local cluster) would.
from contract.merge_patch import merge_patch as merge_patch  # noqa: PLC0414 (explicit re-export)

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
MODEL_URI_ENV = "MODEL_URI"
MERGE_PATCH = "application/merge-patch+json"

Json = dict[str, Any]


class IsvcShapeError(ValueError):
    """The object lacks what the rollout needs (a predictor container with MODEL_URI)."""


def api_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


@dataclass(frozen=True)
class TrafficTarget:
    revision: str | None
    percent: int | None
    latest: bool | None
    tag: str | None

    def to_json(self) -> Json:
        return {
            "revision": self.revision,
            "percent": self.percent,
            "latest": self.latest,
            "tag": self.tag,
        }


@dataclass(frozen=True)
class IsvcState:
    namespace: str
    name: str
    resource_version: str
    model_uri: str
    """`MODEL_URI` of the predictor container in the spec (what the latest revision serves)."""
    canary_percent: int | None
    """`spec.predictor.canaryTrafficPercent`; None when absent."""
    latest_ready_revision: str | None
    latest_rolledout_revision: str | None
    previous_rolledout_revision: str | None
    traffic: tuple[TrafficTarget, ...]
    ready: bool | None
    """The `Ready` condition; None when the controller has not reported one yet."""
    ready_reason: str = ""
    """The Ready condition's reason and message, when it is not True."""
    latest_created_revision: str | None = None


def predictor(obj: Json) -> Json:
    spec = obj.get("spec")
    found = spec.get("predictor") if isinstance(spec, dict) else None
    if not isinstance(found, dict):
        raise IsvcShapeError("the InferenceService has no spec.predictor")
    return found


def _containers(obj: Json) -> list[Json]:
    containers = predictor(obj).get("containers")
    if not isinstance(containers, list) or not containers:
        raise IsvcShapeError(
            "spec.predictor.containers is empty: the rollout drives a custom predictor "
            f"whose first container sets the {MODEL_URI_ENV} environment variable"
        )
    return containers


def _model_uri_entry(container: Json) -> Json:
    for entry in container.get("env") or []:
        if isinstance(entry, dict) and entry.get("name") == MODEL_URI_ENV:
            if "value" not in entry:
                raise IsvcShapeError(
                    f"{MODEL_URI_ENV} of container {container.get('name')!r} comes from "
                    "valueFrom; the rollout needs a literal value to set"
                )
            return entry
    raise IsvcShapeError(
        f"container {container.get('name')!r} (spec.predictor.containers[0]) has no "
        f"{MODEL_URI_ENV} environment variable"
    )


def model_uri(obj: Json) -> str:
    return str(_model_uri_entry(_containers(obj)[0])["value"])


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def parse(obj: Json) -> IsvcState:
    metadata = obj.get("metadata") or {}
    status = obj.get("status") or {}
    component = (status.get("components") or {}).get("predictor") or {}
    traffic = tuple(
        TrafficTarget(
            revision=t.get("revisionName"),
            percent=_int_or_none(t.get("percent")),
            latest=t.get("latestRevision"),
            tag=t.get("tag"),
        )
        for t in component.get("traffic") or []
        if isinstance(t, dict)
    )
    ready = None
    ready_reason = ""
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            ready = condition.get("status") == "True"
            parts = (condition.get("reason"), condition.get("message"))
            ready_reason = ": ".join(str(p) for p in parts if p)
    return IsvcState(
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        resource_version=str(metadata.get("resourceVersion", "")),
        model_uri=model_uri(obj),
        canary_percent=_int_or_none(predictor(obj).get("canaryTrafficPercent")),
        latest_ready_revision=component.get("latestReadyRevision"),
        latest_rolledout_revision=component.get("latestRolledoutRevision"),
        previous_rolledout_revision=component.get("previousRolledoutRevision"),
        traffic=traffic,
        ready=ready,
        ready_reason=ready_reason,
        latest_created_revision=component.get("latestCreatedRevision"),
    )


def restored_revision_pending(state: IsvcState, canary_revision: str | None) -> str | None:
    """Why removing `canaryTrafficPercent: 0` after a rollback is not safe yet; None when it is.

    Removing it sends 100 % to the latest READY revision (Knative's Route follows it), so
    it may go only once the revision the restored spec made is the latest created one AND
    ready: before that, the latest ready revision is the rejected canary's.
    `canary_revision` is the revision that served the canary (read before the restore);
    without it (a second `rollback`), the latest created revision must at least not be
    the last rolled-out one and must be the one the route's `latestRevision` names.
    """
    created, ready = state.latest_created_revision, state.latest_ready_revision
    if not created or created == canary_revision:
        return (
            "KServe has not created the restored revision yet "
            f"(latest created: {created or 'none'})"
        )
    if ready != created:
        why = f": {state.ready_reason}" if state.ready_reason else ""
        return (
            f"the restored revision {created} is not Ready (latest ready: {ready or 'none'}){why}"
        )
    if canary_revision is None:
        routed = [t.revision for t in state.traffic if t.latest]
        if routed and routed[0] != created:
            return f"the route does not follow the restored revision {created} yet"
    return None


def _guarded(obj: Json, predictor_patch: Json) -> Json:
    """A merge patch that applies only to the version of the object we read."""
    body: Json = {"spec": {"predictor": predictor_patch}}
    resource_version = (obj.get("metadata") or {}).get("resourceVersion")
    if resource_version:
        body = {"metadata": {"resourceVersion": resource_version}, **body}
    return body


def containers_with_model_uri(obj: Json, uri: str) -> list[Json]:
    """The complete containers list, with the first container's MODEL_URI set to `uri`."""
    containers = copy.deepcopy(_containers(obj))
    _model_uri_entry(containers[0])["value"] = uri
    return containers


def _check_percent(percent: int) -> None:
    if not 0 <= percent <= 100:
        raise ValueError(f"canary traffic percent must be within [0, 100], got {percent}")


def start_patch(obj: Json, uri: str, percent: int) -> Json:
    """New revision serving `uri`, taking `percent` of the traffic."""
    _check_percent(percent)
    return _guarded(
        obj,
        {"canaryTrafficPercent": percent, "containers": containers_with_model_uri(obj, uri)},
    )


def traffic_patch(obj: Json, percent: int) -> Json:
    """Move the canary's share (0 sends everything back to the last rolled-out revision)."""
    _check_percent(percent)
    return _guarded(obj, {"canaryTrafficPercent": percent})


def promote_patch(obj: Json) -> Json:
    """Remove `canaryTrafficPercent` (null deletes a key in a merge patch): 100 % to latest."""
    return _guarded(obj, {"canaryTrafficPercent": None})


def restore_patch(obj: Json, uri: str) -> Json:
    """Put the stable version back in the spec; traffic stays where it is (0 % to latest)."""
    return _guarded(obj, {"containers": containers_with_model_uri(obj, uri)})
