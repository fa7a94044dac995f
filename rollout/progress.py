"""The controller's record of a rollout, kept in the cluster beside the InferenceService.

The state lives in the cluster, not in the controller's memory, so a controller killed
at any moment finds the rollout where it was. It is an annotation on the Lease
`<isvc>-rollout` (lock.py), the lock `auto` takes too, so the CLI and the controller
cannot run two rollouts of one InferenceService: the controller holds the lease while
a rollout runs (renewing it with every write of the record) and deletes it when the
rollout ends. Not on the InferenceService: KServe copies its annotations into the
Knative revision template, so every write of the record would cut a new revision.

Each write of the record comes before the action it announces (write-ahead): a
controller killed between the two finds the record one step ahead of the spec, and
finishes the action. Promotion and rollback are idempotent, so one killed half-way
simply finishes them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

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
    canary_revision: str | None = None
    """Rolling back: the revision that served the canary, written before the stable spec is
    restored (the revision the restore makes must be another one, and Ready, before
    `canaryTrafficPercent: 0` is removed)."""
    settle_since: float | None = None
    """Rolling back: Unix time the stable spec was restored; the wait for its revision to
    get Ready (before `canaryTrafficPercent` is removed) is bounded from here."""
    outcome: str | None = None
    """How the last rollout ended: `promoted`, `rolled_back` or `abandoned`."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def but(self, **changes: Any) -> Progress:
        return replace(self, **changes)

    @staticmethod
    def parse(raw: str | None) -> Progress:
        """The record from the annotation's text; absent is IDLE (nothing to resume)."""
        if not raw:
            return Progress()
        try:
            data = json.loads(raw)
            data["phase"] = Phase(data.get("phase", Phase.IDLE))
            known = {k: v for k, v in data.items() if k in Progress.__dataclass_fields__}
            return Progress(**known)
        except (TypeError, ValueError, AttributeError) as e:
            raise ValueError(
                f"annotation {ANNOTATION} is not a rollout record ({e}): {raw[:200]!r}; "
                "delete the lease (kubectl delete lease ISVC-rollout) to start over"
            ) from e
