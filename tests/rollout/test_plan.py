from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from rollout.analysis import Analysis, Thresholds, Verdict, VersionStats, evaluate
from rollout.errors import LockLostError, RollbackFailedError, UnreachableError
from rollout.plan import Interrupted, Outcome, Schedule, run_schedule

HEALTHY = VersionStats("2", {"ok": 500.0}, 0.004, {"a": 200.0, "b": 300.0})
STABLE = VersionStats("1", {"ok": 5000.0}, 0.004, {"a": 2000.0, "b": 3000.0})
ERRORS = VersionStats("2", {"ok": 300.0, "error": 200.0}, 0.004, {"a": 120.0, "b": 180.0})
QUIET = VersionStats("2", {"ok": 5.0}, 0.004, {"a": 2.0, "b": 3.0})


def analysis(canary: VersionStats) -> Analysis:
    return evaluate(STABLE, canary, Thresholds())


PASS, FAIL, WAIT = analysis(HEALTHY), analysis(ERRORS), analysis(QUIET)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeOps:
    """Records what the schedule does; answers analyses from a script."""

    script: list[Analysis | BaseException]
    calls: list[str] = field(default_factory=list)
    windows: list[int] = field(default_factory=list)
    fail_rollback: bool = False
    rollback_error: Exception | None = None
    promote_error: Exception | None = None
    interrupt_on_promote: bool = False

    def set_canary_percent(self, percent: int) -> None:
        self.calls.append(f"percent {percent}")

    def analyze(self, window_seconds: int) -> Analysis:
        self.windows.append(window_seconds)
        self.calls.append("analyze")
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    def promote(self) -> None:
        self.calls.append("promote")
        if self.promote_error is not None:
            raise self.promote_error

    def rollback(self, reason: str) -> None:
        self.calls.append(f"rollback: {reason}")
        if self.fail_rollback:
            raise UnreachableError("API server down")
        if self.rollback_error is not None:
            raise self.rollback_error


def run(
    ops: FakeOps, schedule: Schedule | None = None, **kwargs: object
) -> tuple[object, FakeClock]:
    clock = FakeClock()
    result = run_schedule(
        ops,
        schedule
        or Schedule(
            steps=(10, 50, 100), soak_seconds=60, interval_seconds=30, step_timeout_seconds=300
        ),
        clock=clock,
        sleep=clock.sleep,
        critical=contextlib.nullcontext,
        **kwargs,  # type: ignore[arg-type]
    )
    return result, clock


def test_every_step_passing_ends_promoted() -> None:
    ops = FakeOps([PASS, PASS])
    result, clock = run(ops)
    assert result.outcome is Outcome.PROMOTED  # type: ignore[attr-defined]
    assert ops.calls == ["percent 10", "analyze", "percent 50", "analyze", "promote"]
    assert ops.windows == [60, 60]  # each step judged on its own soak time
    assert clock.now == 120


def test_the_first_step_is_not_reapplied_when_start_already_set_it() -> None:
    ops = FakeOps([PASS, PASS])
    run(ops, already_at=10)
    assert ops.calls == ["analyze", "percent 50", "analyze", "promote"]


def test_adopting_a_canary_beyond_the_first_step_skips_the_lower_steps() -> None:
    ops = FakeOps([PASS])
    run(ops, already_at=30)
    assert ops.calls == ["percent 50", "analyze", "promote"]


def test_adopting_a_canary_beyond_every_step_judges_it_before_promoting() -> None:
    ops = FakeOps([FAIL])
    result, _ = run(ops, already_at=60)
    assert ops.calls[0] == "analyze"
    assert ops.calls[1].startswith("rollback: analysis failed at 60 %")
    assert result.outcome is Outcome.ROLLED_BACK  # type: ignore[attr-defined]


def test_a_failed_check_rolls_back_at_once() -> None:
    ops = FakeOps([FAIL, PASS])
    result, _ = run(ops)
    assert result.outcome is Outcome.ROLLED_BACK  # type: ignore[attr-defined]
    assert ops.calls[:2] == ["percent 10", "analyze"]
    assert len(ops.calls) == 3 and ops.calls[2].startswith("rollback: analysis failed at 10 %")
    assert "success_ratio" in ops.calls[2]


def test_a_failure_at_a_later_step_rolls_back_too() -> None:
    ops = FakeOps([PASS, WAIT, FAIL])
    result, _ = run(ops)
    assert ops.calls[:5] == ["percent 10", "analyze", "percent 50", "analyze", "analyze"]
    assert ops.calls[5].startswith("rollback: analysis failed at 50 %")
    assert "promote" not in ops.calls
    assert [s.percent for s in result.steps] == [10, 50]  # type: ignore[attr-defined]


def test_inconclusive_analyses_wait_then_pass() -> None:
    ops = FakeOps([WAIT, WAIT, PASS, PASS])
    result, _ = run(ops)
    assert result.outcome is Outcome.PROMOTED  # type: ignore[attr-defined]
    assert ops.windows == [60, 90, 120, 60]  # the window grows with the step


def test_a_step_inconclusive_until_its_timeout_rolls_back() -> None:
    ops = FakeOps([WAIT] * 20)
    result, clock = run(ops)
    assert result.outcome is Outcome.ROLLED_BACK  # type: ignore[attr-defined]
    assert "still inconclusive after 300s at 10 %" in result.reason  # type: ignore[attr-defined]
    assert ops.calls.count("analyze") == 9  # at 60, 90, ..., 300 s
    assert clock.now == 300
    assert "promote" not in ops.calls


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), Interrupted("signal 15")])
def test_an_interrupt_rolls_back(interrupt: BaseException) -> None:
    ops = FakeOps([PASS, interrupt])
    result, _ = run(ops)
    assert result.outcome is Outcome.ROLLED_BACK  # type: ignore[attr-defined]
    assert ops.calls == [
        "percent 10",
        "analyze",
        "percent 50",
        "analyze",
        "rollback: interrupted by the operator before the rollout finished",
    ]


def test_an_interrupt_while_soaking_rolls_back() -> None:
    ops = FakeOps([])

    def sleep(_seconds: float) -> None:
        raise KeyboardInterrupt

    result = run_schedule(ops, Schedule(), sleep=sleep, critical=contextlib.nullcontext)
    assert result.outcome is Outcome.ROLLED_BACK
    assert ops.calls == [
        "percent 10",
        "rollback: interrupted by the operator before the rollout finished",
    ]


def test_losing_prometheus_mid_run_rolls_back() -> None:
    ops = FakeOps([PASS, UnreachableError("Prometheus at http://x is unreachable")])
    result, _ = run(ops)
    assert result.outcome is Outcome.ROLLED_BACK  # type: ignore[attr-defined]
    assert ops.calls[-1] == "rollback: aborted: Prometheus at http://x is unreachable"


@pytest.mark.parametrize(
    "error",
    [KeyError("value"), TypeError("'NoneType' object is not subscriptable"), ValueError("x")],
)
def test_any_unexpected_error_mid_run_rolls_back_too(error: Exception) -> None:
    """Not only the tool's own errors: a bug or a library's surprise must not leave the
    canary taking traffic."""
    ops = FakeOps([PASS, error])
    result, _ = run(ops)
    assert result.outcome is Outcome.ROLLED_BACK  # type: ignore[attr-defined]
    assert ops.calls[-1] == (
        f"rollback: aborted by an unexpected error: {error.__class__.__name__}: {error}"
    )


def test_an_unexpected_error_while_promoting_rolls_back() -> None:
    ops = FakeOps([PASS, PASS], promote_error=RuntimeError("registry client broke"))
    result, _ = run(ops)
    assert result.outcome is Outcome.ROLLED_BACK  # type: ignore[attr-defined]
    assert ops.calls[-2:] == [
        "promote",
        "rollback: aborted by an unexpected error: RuntimeError: registry client broke",
    ]


def test_an_unexpected_error_in_the_rollback_is_a_failed_rollback() -> None:
    ops = FakeOps([FAIL], rollback_error=KeyError("spec"))
    with pytest.raises(RollbackFailedError, match=r"ROLLBACK FAILED"):
        run(ops)


def test_losing_the_lock_to_another_run_stops_without_touching_the_canary() -> None:
    ops = FakeOps([PASS, LockLostError("Lease mlops/x-rollout is now held by b")])
    with pytest.raises(LockLostError):
        run(ops)
    assert not any(c.startswith("rollback") for c in ops.calls)


def test_a_failed_rollback_is_loud() -> None:
    ops = FakeOps([FAIL], fail_rollback=True)
    with pytest.raises(RollbackFailedError, match=r"ROLLBACK FAILED .*canaryTrafficPercent: 0"):
        run(ops)


def test_promotion_and_rollback_run_inside_the_critical_section() -> None:
    entered: list[str] = []

    @contextlib.contextmanager
    def critical() -> Iterator[None]:
        entered.append("in")
        yield
        entered.append("out")

    ops = FakeOps([PASS, PASS])
    run_schedule(ops, Schedule(soak_seconds=0), sleep=lambda _s: None, critical=critical)
    assert entered == ["in", "out"]
    assert ops.calls[-1] == "promote"


def test_the_real_critical_section_defers_sigint() -> None:
    import os
    import signal

    from rollout.plan import interrupts_deferred

    before = signal.getsignal(signal.SIGINT)
    with interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt outside
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ((10, 50), "last step must be 100"),
        ((50, 10, 100), "steps must rise"),
        ((0, 100), "within 1..100"),
        ((), "last step must be 100"),
        ((100,), "at least one step below 100"),
    ],
)
def test_bad_schedules_are_refused(steps: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule(steps=steps)


def test_steps_parse() -> None:
    assert Schedule.parse_steps("10, 25,50,100") == (10, 25, 50, 100)
    with pytest.raises(ValueError, match="comma-separated integers"):
        Schedule.parse_steps("10,half,100")


def test_verdicts_used_here_are_what_they_claim() -> None:
    assert (PASS.verdict, FAIL.verdict, WAIT.verdict) == (
        Verdict.PASS,
        Verdict.FAIL,
        Verdict.INCONCLUSIVE,
    )
