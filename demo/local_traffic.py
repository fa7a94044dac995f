"""KServe's traffic rules in Knative mode, as pure functions over the InferenceService's JSON.

The local stand-in (demo/local_serving.py) computes the same traffic split and the same
`status.components.predictor` fields as KServe does on a cluster, from these sources:

- kserve pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go,
  `createKnativeService`: with `canaryTrafficPercent` set and a last rolled-out revision
  known, the latest (ready) revision gets that percent and the last rolled-out revision
  (tag `prev`) the rest; otherwise 100 % goes to the latest revision.
- kserve pkg/apis/serving/v1beta1/inference_service_status.go, `PropagateStatus`: the
  latest ready revision becomes `latestRolledoutRevision` once it takes 100 % (the former
  one moves to `previousRolledoutRevision`); a latest revision rolled out at 100 % whose
  share then drops below 100 % on a split over itself gives the title back to the previous.
- Knative's Route: a `latestRevision: true` target follows the Configuration's latest
  READY revision, so a canary revision that never turns ready takes no traffic.

A revision's template is `spec.predictor` without `canaryTrafficPercent`: a traffic-only
patch routes differently but, as in Knative, creates no revision.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]

PREV_TAG = "prev"


def template(obj: Json) -> Json:
    """What a revision is made of: the predictor spec without the traffic field."""
    predictor = copy.deepcopy((obj.get("spec") or {}).get("predictor") or {})
    predictor.pop("canaryTrafficPercent", None)
    return predictor


def template_key(spec: Json) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def canary_percent(obj: Json) -> int | None:
    value = ((obj.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


@dataclass(frozen=True)
class Target:
    """One entry of the route: a revision (None until one is ready) and its percent."""

    revision: str | None
    percent: int
    latest: bool
    tag: str | None = None

    def to_status(self) -> Json:
        entry: Json = {"revisionName": self.revision, "percent": self.percent}
        entry["latestRevision"] = self.latest
        if self.tag:
            entry["tag"] = self.tag
        return entry


@dataclass(frozen=True)
class Component:
    """`status.components.predictor` as KServe writes it (the fields the rollout reads)."""

    latest_created: str | None = None
    latest_ready: str | None = None
    latest_rolledout: str | None = None
    previous_rolledout: str | None = None

    @classmethod
    def from_status(cls, status: Json) -> Component:
        found = ((status or {}).get("components") or {}).get("predictor") or {}
        return cls(
            latest_created=found.get("latestCreatedRevision"),
            latest_ready=found.get("latestReadyRevision"),
            latest_rolledout=found.get("latestRolledoutRevision"),
            previous_rolledout=found.get("previousRolledoutRevision"),
        )


def route(canary: int | None, before: Component, latest_ready: str | None) -> list[Target]:
    """The traffic targets (createKnativeService), resolved as Knative's Route resolves
    `latestRevision: true`: to the latest ready revision."""
    last_rolledout = before.latest_rolledout
    if canary is not None and last_rolledout:
        targets = [Target(latest_ready, canary, latest=True)]
        if canary < 100:
            targets.append(Target(last_rolledout, 100 - canary, latest=False, tag=PREV_TAG))
        return targets
    return [Target(latest_ready, 100, latest=True)]


def propagate(
    before: Component, latest_created: str | None, latest_ready: str | None, targets: list[Target]
) -> Component:
    """The component status after this route (PropagateStatus)."""
    rolledout, previous = before.latest_rolledout, before.previous_rolledout
    per_revision: dict[str | None, int] = {}
    for target in targets:
        per_revision[target.revision] = per_revision.get(target.revision, 0) + target.percent
    for target in targets:
        if not (target.latest and target.revision == latest_ready and latest_ready):
            continue
        if rolledout != latest_ready:
            if target.percent == 100:
                previous, rolledout = rolledout, latest_ready
        elif (
            latest_ready == latest_created
            and target.percent < 100
            and per_revision.get(target.revision) == 100
            and previous
        ):
            rolledout = previous
    return Component(
        latest_created=latest_created,
        latest_ready=latest_ready,
        latest_rolledout=rolledout,
        previous_rolledout=previous,
    )


def component_status(component: Component, targets: list[Target], url: str) -> Json:
    status: Json = {
        "latestCreatedRevision": component.latest_created,
        "latestReadyRevision": component.latest_ready,
        "latestRolledoutRevision": component.latest_rolledout,
        "previousRolledoutRevision": component.previous_rolledout,
        "traffic": [t.to_status() for t in targets if t.revision is not None],
        "url": url,
    }
    return {key: value for key, value in status.items() if value is not None}
