"""`auto`: step the canary through a schedule, judge after each step, end promoted or rolled back.

The schedule is a rising list of percentages ending at 100 (`10,50,100`); 100
means promote. At each step below 100 the canary gets that share, soaks for
`soak_seconds`, and is analysed over the time since the step began; the analysis
repeats every `interval_seconds` while it is inconclusive, up to
`step_timeout_seconds`. A failed check rolls back at once; a step still
inconclusive at its timeout rolls back too (no evidence is not a pass); an error
talking to Kubernetes or Prometheus rolls back; so does Ctrl-C or SIGTERM.
Promotion and rollback run with interrupts deferred, so a second Ctrl-C cannot
leave them half done.

The side effects come in through `RolloutOps`, so the decision logic is
unit-tested with a fake and integration-tested with the real Kubernetes client.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from rollout.analysis import Analysis, Verdict
from rollout.errors import LockLostError, RollbackFailedError, RolloutError

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


class RolloutOps(Protocol):
    def set_canary_percent(self, percent: int) -> None: ...
    def analyze(self, window_seconds: int) -> Analysis: ...
    def promote(self) -> None: ...
    def rollback(self, reason: str) -> None: ...


@dataclass(frozen=True)
class Schedule:
    steps: tuple[int, ...] = (10, 50, 100)
    soak_seconds: float = 120.0
    """Wait after each traffic change before the first analysis of the step."""
    interval_seconds: float = 30.0
    """Wait between analyses while a step is inconclusive."""
    step_timeout_seconds: float = 600.0
    """Longest a step may stay inconclusive before the canary is rolled back."""

    def __post_init__(self) -> None:
        steps = self.steps
        problems = []
        if not steps or steps[-1] != 100:
            problems.append("the last step must be 100 (promotion)")
        if len(steps) < 2:
            problems.append("at least one step below 100 must be analysed before promotion")
        if any(not 0 < s <= 100 for s in steps):
            problems.append("every step must be within 1..100")
        if any(b <= a for a, b in itertools.pairwise(steps)):
            problems.append("steps must rise")
        if self.soak_seconds < 0 or self.interval_seconds <= 0:
            problems.append("--soak must be >= 0 and --interval > 0 seconds")
        if self.step_timeout_seconds < self.soak_seconds:
            problems.append("--step-timeout must be at least --soak")
        if problems:
            raise ValueError(f"schedule {','.join(map(str, steps))}: " + "; ".join(problems))

    @staticmethod
    def parse_steps(text: str) -> tuple[int, ...]:
        try:
            return tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError as e:
            raise ValueError(f"--steps {text!r}: expected comma-separated integers") from e


@dataclass
class StepRecord:
    percent: int
    analyses: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Result:
    outcome: Outcome
    reason: str
    steps: list[StepRecord] = field(default_factory=list)


class Interrupted(BaseException):
    """SIGTERM, turned into an exception like SIGINT's KeyboardInterrupt."""


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Run a block to its end even if SIGINT/SIGTERM arrive (they are logged, then dropped)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum: int, _frame: Any) -> None:
        logger.warning("signal %s ignored: finishing the promotion/rollback first", signum)

    previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_schedule(
    ops: RolloutOps,
    schedule: Schedule,
    *,
    already_at: int | None = None,
    on_analysis: Callable[[int, Analysis], None] = lambda _p, _a: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    critical: Callable[[], contextlib.AbstractContextManager[Any]] = interrupts_deferred,
) -> Result:
    """Drive the canary to promotion or rollback; never return half-way.

    `already_at`: the canary already takes this share (it was started before), so the
    steps below it are skipped and a step equal to it is not re-applied; when no step
    is left below 100, the current share is judged before promotion.
    """
    result = Result(Outcome.ROLLED_BACK, "")
    to_judge = [p for p in schedule.steps if p < 100 and (already_at is None or p >= already_at)]
    if not to_judge and already_at is not None:
        to_judge = [already_at]

    def roll_back(reason: str) -> Result:
        logger.warning("rolling back: %s", reason)
        try:
            with critical():
                ops.rollback(reason)
        except Exception as e:  # whatever broke it, the operator must act
            logger.debug("the rollback failed", exc_info=True)
            raise RollbackFailedError(
                f"ROLLBACK FAILED ({e}); the canary may still take traffic: run "
                "`python -m rollout rollback` or set canaryTrafficPercent: 0 by hand"
            ) from e
        result.outcome, result.reason = Outcome.ROLLED_BACK, reason
        return result

    try:
        for percent in to_judge:
            if percent != already_at:
                ops.set_canary_percent(percent)
            already_at = percent
            record = StepRecord(percent)
            result.steps.append(record)
            verdict = _judge_step(
                ops,
                schedule,
                percent=percent,
                record=record,
                on_analysis=on_analysis,
                clock=clock,
                sleep=sleep,
            )
            if verdict is not None:
                return roll_back(verdict)
        with critical():
            ops.promote()
    except (KeyboardInterrupt, Interrupted):
        return roll_back("interrupted by the operator before the rollout finished")
    except LockLostError:
        raise  # the new holder of the lock owns the canary: leave it to them
    except RolloutError as e:
        return roll_back(f"aborted: {e}")
    except Exception as e:  # a bug or a surprise: still roll back
        # Never leave a canary taking traffic because of an error nobody foresaw; the
        # traceback goes to the log, the reason names the exception.
        logger.exception("unexpected error during the rollout")
        return roll_back(f"aborted by an unexpected error: {e.__class__.__name__}: {e}")
    result.outcome, result.reason = Outcome.PROMOTED, "every step passed its analysis"
    return result


class StepDecision(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    WAIT = "wait"
    """Inconclusive, and the step has time left: analyse again after `interval_seconds`."""


def decide_step(
    analysis: Analysis, percent: int, elapsed: float, schedule: Schedule
) -> tuple[StepDecision, str]:
    """What one analysis of a step means, `elapsed` seconds after the step began; with the
    reason (for a rollback: why). `auto` and the controller both judge a step this way."""
    if analysis.verdict is Verdict.FAIL:
        return StepDecision.FAILED, f"analysis failed at {percent} %: {analysis.reason}"
    if analysis.verdict is Verdict.PASS:
        return StepDecision.PASSED, f"analysis passed at {percent} %: {analysis.reason}"
    if elapsed + schedule.interval_seconds > schedule.step_timeout_seconds:
        return StepDecision.FAILED, (
            f"still inconclusive after {elapsed:.0f}s at {percent} % "
            f"(--step-timeout {schedule.step_timeout_seconds:g}s): {analysis.reason}"
        )
    return StepDecision.WAIT, analysis.reason


def _judge_step(
    ops: RolloutOps,
    schedule: Schedule,
    *,
    percent: int,
    record: StepRecord,
    on_analysis: Callable[[int, Analysis], None],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> str | None:
    """None when the step passed; otherwise why the canary must be rolled back."""
    began = clock()
    sleep(schedule.soak_seconds)
    while True:
        elapsed = clock() - began
        analysis = ops.analyze(max(1, math.ceil(elapsed)))
        on_analysis(percent, analysis)
        record.analyses.append({"verdict": analysis.verdict.value, "reason": analysis.reason})
        decision, reason = decide_step(analysis, percent, elapsed, schedule)
        if decision is StepDecision.FAILED:
            return reason
        if decision is StepDecision.PASSED:
            return None
        sleep(schedule.interval_seconds)
