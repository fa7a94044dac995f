"""Where a rollout stands, from the InferenceService and the registry, and what may happen next.

Stable is what `@champion` names (docs/design.md, "The contract": `champion` is what
the stable revision serves); the spec's `MODEL_URI` is what the latest revision serves.
A canary is running when the spec serves another version than stable and
`canaryTrafficPercent` gives it a share above 0. Pure functions: the refusals of
`start`, `promote` and `rollback` are unit-tested here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contract import registry_tags
from contract.uris import CHAMPION
from rollout.errors import RefusedError
from rollout.isvc import IsvcState


@dataclass(frozen=True)
class RolloutState:
    isvc: IsvcState
    aliases: dict[str, str]
    spec_version: str
    """The version the spec's MODEL_URI names (an alias there is resolved)."""
    local: bool = False
    """Read from the demo's local cluster (`--target local`): the hints name its tools."""

    @property
    def stable_version(self) -> str | None:
        return self.aliases.get(CHAMPION)

    @property
    def canary_running(self) -> bool:
        percent = self.isvc.canary_percent
        return percent is not None and percent > 0 and self.spec_version != self.stable_version

    @property
    def canary_version(self) -> str | None:
        return self.spec_version if self.canary_running else None

    @property
    def rolled_back(self) -> bool:
        """The last canary was rolled back: its share is pinned at 0 %."""
        return self.isvc.canary_percent == 0

    @property
    def pending_promotion(self) -> bool:
        """The spec serves another version than @champion at 100 %: `promote` finishes it."""
        return self.isvc.canary_percent is None and self.spec_version != self.stable_version

    def summary(self) -> dict[str, Any]:
        return {
            "namespace": self.isvc.namespace,
            "name": self.isvc.name,
            "ready": self.isvc.ready,
            "model_uri": self.isvc.model_uri,
            "stable_version": self.stable_version,
            "canary_version": self.canary_version,
            "canary_percent": self.isvc.canary_percent,
            "stable_revision": self.isvc.latest_rolledout_revision,
            "latest_ready_revision": self.isvc.latest_ready_revision,
            "traffic": [t.to_json() for t in self.isvc.traffic],
            "aliases": dict(sorted(self.aliases.items())),
        }


def check_ready(state: RolloutState, action: str) -> None:
    """Refuse to act on an InferenceService that is not Ready: with no Ready condition
    (fresh from Helm, no controller yet) nothing says which revision serves what."""
    isvc = state.isvc
    where = f"InferenceService {isvc.namespace}/{isvc.name}"
    if isvc.ready is None and state.local:
        raise RefusedError(
            f"{where} has no Ready condition yet: local serving has not reported on it, so "
            f"nothing says what serves; refusing to {action}. Wait until "
            "`python -m rollout status --target local` shows it ready (is local serving "
            "running? `make demo` starts it)"
        )
    if isvc.ready is None:
        raise RefusedError(
            f"{where} has no Ready condition yet: no KServe controller has reported on it, so "
            f"nothing says what serves; refusing to {action}. Wait until "
            f"`kubectl get isvc {isvc.name}` shows READY True (is KServe installed?)"
        )
    if not isvc.ready:
        reason = f" ({isvc.ready_reason})" if isvc.ready_reason else ""
        look = (
            "its message names the revision's log"
            if state.local
            else f"`kubectl describe isvc {isvc.name}`"
        )
        raise RefusedError(
            f"{where} is not Ready{reason}; refusing to {action}: fix what the condition "
            f"says ({look}), or roll back"
        )


def check_can_start(
    state: RolloutState, version: str, tags: dict[str, str], allow_rejected: bool = False
) -> None:
    """Refuse a canary of the stable version, a second canary, or a rejected version
    (by the training gates or by an earlier rollout)."""
    if state.stable_version is None:
        raise RefusedError(
            "the model has no @champion, so there is no stable version to compare a canary "
            "with; the first training run sets it"
        )
    if version == state.stable_version:
        raise RefusedError(
            f"version {version} is already stable (@{CHAMPION}); nothing to roll out"
        )
    if state.canary_running:
        raise RefusedError(
            f"a canary of version {state.spec_version} is already running at "
            f"{state.isvc.canary_percent} %: promote or roll it back first"
        )
    if state.pending_promotion:
        raise RefusedError(
            f"the spec serves version {state.spec_version} at 100 % but @{CHAMPION} is "
            f"{state.stable_version}: finish that with `promote` or `rollback` first"
        )
    check_ready(state, "start a canary")
    if tags.get(registry_tags.GATE_STATUS) == registry_tags.GATE_REJECTED and not allow_rejected:
        raise RefusedError(
            f"version {version} failed the training gates "
            f"({tags.get(registry_tags.REJECTION_REASON, 'no reason given')}); "
            "pass --allow-rejected to roll it out anyway"
        )
    if tags.get(registry_tags.ROLLOUT_STATUS) == registry_tags.ROLLED_BACK and not allow_rejected:
        raise RefusedError(
            f"version {version} was rolled back before "
            f"({tags.get(registry_tags.ROLLOUT_REASON, 'no reason given')}); "
            "pass --allow-rejected to try it again"
        )


def check_can_promote(state: RolloutState) -> str:
    """The version to promote, or a refusal when there is nothing to promote."""
    if state.stable_version is None:
        raise RefusedError("the model has no @champion; nothing to promote against")
    if state.canary_running or state.pending_promotion:
        check_ready(state, f"promote version {state.spec_version}")
        return state.spec_version
    if state.rolled_back and state.spec_version != state.stable_version:
        raise RefusedError(
            f"the canary of version {state.spec_version} takes 0 % (it was being rolled "
            "back); start a new canary instead of promoting it"
        )
    raise RefusedError(
        f"no canary is running: the spec serves the stable version {state.stable_version}"
    )


def check_can_roll_back(state: RolloutState) -> str:
    """The version to reject, or a refusal when there is nothing to roll back."""
    if state.stable_version is None:
        raise RefusedError(
            "the model has no @champion, so there is no stable version to roll back to"
        )
    if state.spec_version == state.stable_version and not (state.isvc.canary_percent or 0) > 0:
        raise RefusedError(
            f"no canary to roll back: the spec serves the stable version {state.stable_version}"
        )
    return state.spec_version
