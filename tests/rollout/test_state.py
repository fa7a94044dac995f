from __future__ import annotations

import pytest

from rollout import isvc
from rollout.errors import RefusedError
from rollout.state import (
    RolloutState,
    check_can_promote,
    check_can_roll_back,
    check_can_start,
)
from tests.rollout.fake_apiserver import inference_service

ALIASES = {"champion": "3", "challenger": "4"}


def state(
    spec_version: str,
    percent: int | None,
    aliases: dict[str, str] = ALIASES,
    conditions: list[dict[str, str]] | None = None,
) -> RolloutState:
    obj = inference_service(
        "breast-cancer", "mlops", f"models:/breast-cancer/{spec_version}", percent
    )
    if conditions is not None:
        obj["status"]["conditions"] = conditions
    return RolloutState(isvc.parse(obj), aliases, spec_version)


NO_STATUS: list[dict[str, str]] = []
NOT_READY = [
    {
        "type": "Ready",
        "status": "False",
        "reason": "RevisionMissing",
        "message": "Configuration is waiting for a Revision to become ready.",
    }
]


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        (NO_STATUS, "has no Ready condition yet: no KServe controller has reported on it"),
        (NOT_READY, "is not Ready \\(RevisionMissing: Configuration is waiting for a Revision"),
    ],
    ids=["no-status", "not-ready"],
)
def test_start_and_promote_refuse_an_isvc_that_is_not_ready(
    conditions: list[dict[str, str]], message: str
) -> None:
    with pytest.raises(RefusedError, match=f"{message}.*refusing to start a canary"):
        check_can_start(state("3", None, conditions=conditions), "4", {})
    with pytest.raises(RefusedError, match=f"{message}.*refusing to promote version 4"):
        check_can_promote(state("4", 10, conditions=conditions))
    # Rolling back is always allowed: it is how a broken canary is undone.
    assert check_can_roll_back(state("4", 10, conditions=conditions)) == "4"


def test_stable_serving_alone_has_no_canary() -> None:
    s = state("3", None)
    assert (s.stable_version, s.canary_running, s.canary_version) == ("3", False, None)


def test_a_new_version_with_a_share_is_a_running_canary() -> None:
    s = state("4", 10)
    assert (s.canary_running, s.canary_version, s.rolled_back) == (True, "4", False)


def test_a_rolled_back_canary_pinned_at_zero_is_not_running() -> None:
    s = state("3", 0)
    assert (s.canary_running, s.rolled_back) == (False, True)


def test_start_is_allowed_from_a_clean_or_rolled_back_state() -> None:
    check_can_start(state("3", None), "4", {})
    check_can_start(state("3", 0), "4", {})


@pytest.mark.parametrize(
    ("current", "version", "tags", "message"),
    [
        (state("3", None), "3", {}, "already stable"),
        (state("4", 10), "5", {}, "canary of version 4 is already running at 10 %"),
        (state("4", None), "5", {}, "finish that with `promote` or `rollback`"),
        (
            state("3", None),
            "4",
            {"rollout_status": "rejected", "rollout_reason": "class_drift"},
            "rolled back before \\(class_drift\\)",
        ),
        (state("3", None, {}), "4", {}, "no @champion"),
        (
            state("3", None),
            "4",
            {"gate_status": "rejected", "rejection_reason": "recall 0.91 < 0.95"},
            "failed the training gates \\(recall 0.91 < 0.95\\)",
        ),
    ],
)
def test_start_refuses(
    current: RolloutState, version: str, tags: dict[str, str], message: str
) -> None:
    with pytest.raises(RefusedError, match=message):
        check_can_start(current, version, tags)


def test_a_rejected_version_may_be_retried_on_purpose() -> None:
    check_can_start(state("3", None), "4", {"rollout_status": "rejected"}, allow_rejected=True)


def test_promote_takes_the_spec_version() -> None:
    assert check_can_promote(state("4", 10)) == "4"
    assert check_can_promote(state("4", 50)) == "4"
    # The cluster side of an earlier promote went through; only @champion is left to move.
    assert check_can_promote(state("4", None)) == "4"


@pytest.mark.parametrize(
    ("current", "message"),
    [(state("3", None), "no canary is running"), (state("4", 0), "takes 0 %")],
)
def test_promote_refuses(current: RolloutState, message: str) -> None:
    with pytest.raises(RefusedError, match=message):
        check_can_promote(current)


def test_rollback_rejects_the_spec_version() -> None:
    assert check_can_roll_back(state("4", 10)) == "4"
    # Traffic already cut to 0 %, spec not restored yet: finish the rollback.
    assert check_can_roll_back(state("4", 0)) == "4"


def test_rollback_refuses_when_stable_serves_alone() -> None:
    for current in (state("3", None), state("3", 0)):
        with pytest.raises(RefusedError, match="no canary to roll back"):
            check_can_roll_back(current)
