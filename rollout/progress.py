"""The controller's record of a rollout, kept in an annotation on the InferenceService.

The state lives in the cluster, not in the controller's memory, so a controller killed
at any moment finds the rollout where it was. Every traffic change is written in the
same merge patch as the record that describes it (one write, one resourceVersion), so
the record can never say 10 % while the spec says 50 %. Promotion and rollback are
written as a phase first and then carried out; each is idempotent, so a controller
killed half-way simply finishes it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from rollout import isvc

ANNOTATION = "rollout.mlops/state"


class Phase(StrEnum):
    IDLE = "idle"
    """No rollout runs; `outcome` tells how the last one ended."""
    PROGRESSING = "progressing"
    """The canary takes `percent` % since `step_started`: soak, then analysis."""
    PROMOTING = "promoting"
    ROLLING_BACK = "rolling_back"


PHASES = tuple(Phase)


@dataclass(frozen=True)
class Progress:
    phase: Phase = Phase.IDLE
    version: str | None = None
    """The challenger being rolled out (or the last one, when idle)."""
    stable: str | None = None
    """The version @champion named when the rollout began."""
    step: int = 0
    """Index of the current step in the schedule."""
    percent: int = 0
    step_started: float = 0.0
    """Unix time the current step's traffic share was set (its analysis window starts here)."""
    unjudged_since: float | None = None
    """Unix time of the first analysis of this step that could not run (Prometheus down)."""
    reason: str = ""
    outcome: str | None = None
    """How the last rollout ended: `promoted`, `rolled_back` or `abandoned`."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def but(self, **changes: Any) -> Progress:
        return replace(self, **changes)

    @staticmethod
    def read(obj: isvc.Json) -> Progress:
        """The record on `obj`; an absent or unreadable one is IDLE (nothing to resume)."""
        raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
        if not raw:
            return Progress()
        try:
            data = json.loads(raw)
            data["phase"] = Phase(data.get("phase", Phase.IDLE))
            known = {k: v for k, v in data.items() if k in Progress.__dataclass_fields__}
            return Progress(**known)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"annotation {ANNOTATION} is not a rollout record ({e}): {raw[:200]!r}; "
                "remove it (kubectl annotate isvc NAME rollout.mlops/state-) to start over"
            ) from e


def with_progress(patch: isvc.Json, progress: Progress) -> isvc.Json:
    """`patch` (already guarded by resourceVersion) that also writes the record."""
    metadata = dict(patch.get("metadata") or {})
    metadata["annotations"] = {ANNOTATION: progress.to_json()}
    return {**patch, "metadata": metadata}


def progress_patch(obj: isvc.Json, progress: Progress) -> isvc.Json:
    """A merge patch of the record alone, guarded by the resourceVersion of `obj`."""
    resource_version = (obj.get("metadata") or {}).get("resourceVersion")
    metadata: isvc.Json = {"annotations": {ANNOTATION: progress.to_json()}}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {"metadata": metadata}
