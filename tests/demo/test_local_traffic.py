"""KServe's traffic and status rules (demo/local_traffic.py) on the rollout's sequences."""

from __future__ import annotations

from demo.local_traffic import Component, Target, propagate, route, template


def step(
    before: Component, canary: int | None, created: str, ready: str
) -> tuple[list[Target], Component]:
    targets = route(canary, before, ready)
    return targets, propagate(before, created, ready, targets)


def test_create_then_canary_then_promote() -> None:
    targets, status = step(Component(), None, "r1", "r1")
    assert targets == [Target("r1", 100, latest=True)]
    assert status.latest_rolledout == "r1" and status.previous_rolledout is None

    targets, status = step(status, 10, "r2", "r2")
    assert targets == [Target("r2", 10, latest=True), Target("r1", 90, latest=False, tag="prev")]
    assert status.latest_rolledout == "r1"

    targets, status = step(status, None, "r2", "r2")
    assert targets == [Target("r2", 100, latest=True)]
    assert (status.latest_rolledout, status.previous_rolledout) == ("r2", "r1")


def test_a_canary_not_ready_yet_sends_its_share_to_the_latest_ready_revision() -> None:
    _, status = step(Component(), None, "r1", "r1")
    targets, status = step(status, 10, "r2", "r1")
    assert [(t.revision, t.percent) for t in targets] == [("r1", 10), ("r1", 90)]
    # A split over one revision is not a roll back of a revision never rolled out.
    assert status.latest_rolledout == "r1"


def test_rollback_at_zero_then_restore_keeps_the_stable_revision_rolled_out() -> None:
    _, status = step(Component(), None, "r1", "r1")
    _, status = step(status, 50, "r2", "r2")
    targets, status = step(status, 0, "r2", "r2")
    assert [(t.revision, t.percent) for t in targets] == [("r2", 0), ("r1", 100)]
    targets, status = step(status, 0, "r3", "r3")
    assert [(t.revision, t.percent) for t in targets] == [("r3", 0), ("r1", 100)]
    assert status.latest_rolledout == "r1" and status.latest_ready == "r3"


def test_a_traffic_only_change_keeps_the_template() -> None:
    obj = {"spec": {"predictor": {"canaryTrafficPercent": 10, "containers": [{"name": "c"}]}}}
    other = {"spec": {"predictor": {"canaryTrafficPercent": 50, "containers": [{"name": "c"}]}}}
    assert template(obj) == template(other) == {"containers": [{"name": "c"}]}
