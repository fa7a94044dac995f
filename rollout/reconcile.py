"""One InferenceService's rollout, advanced one decision at a time (what the controller runs).

`tick()` reads the InferenceService, its record (progress.py) and the registry, takes
at most one decision, writes it, and says how long to wait before the next tick. It
holds nothing between ticks that matters: a controller restarted at any moment ticks
on from the record. The judgement and the actions are the CLI's own: `Rollout`
(commands.py) reads the state, sends the guarded merge patches, promotes and rolls
back; `decide_step` (plan.py) judges a step exactly as `auto` does.

The trigger: a `@challenger` that is neither the stable version nor tagged promoted or
rejected by a rollout. Refusals (a canary already running, a version the training gates
rejected, an InferenceService that is not Ready, a challenger whose input signature
differs from stable's) are said once per version and reason, and nothing is patched.

Every decision is recorded three ways: an Event on the InferenceService, the
`rollout_decision` tag on the version (promotion and rollback also write the CLI's
`rollout_status` / `rollout_reason`), and a log line.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from rollout import isvc
from rollout.commands import Rollout
from rollout.controller_metrics import ControllerMetrics
from rollout.errors import ConflictError, RefusedError, RolloutError, UnreachableError
from rollout.plan import Schedule, StepDecision, decide_step
from rollout.progress import Phase, Progress, progress_patch, with_progress
from rollout.registry import CHALLENGER, PROMOTED, REJECTED, STATUS_TAG, version_uri
from rollout.state import RolloutState, check_can_start

logger = logging.getLogger(__name__)

NORMAL, WARNING = "Normal", "Warning"


@dataclass(frozen=True)
class ControllerConfig:
    schedule: Schedule
    poll_seconds: float = 30.0
    """How often the registry is asked for a new @challenger while no rollout runs."""
    grace_seconds: float = 120.0
    """How long a step's analysis may fail to run (Prometheus down) before rolling back."""

    def __post_init__(self) -> None:
        if self.poll_seconds <= 0 or self.grace_seconds < 0:
            raise ValueError(
                f"--poll must be > 0 and --grace >= 0 seconds, got {self.poll_seconds:g} "
                f"and {self.grace_seconds:g}"
            )


class Reconciler:
    def __init__(
        self,
        rollout: Rollout,
        config: ControllerConfig,
        metrics: ControllerMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rollout = rollout
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.model = rollout.settings.model_name
        self._said: set[str] = set()
        """Refusals already recorded (version: reason), so a poll does not repeat them."""

    # -- recording -------------------------------------------------------------------------

    def record(
        self, obj: isvc.Json, version: str | None, reason: str, message: str, kind: str = NORMAL
    ) -> None:
        """Event, registry tag, log line; a failure to record is logged, never fatal."""
        log = logger.warning if kind == WARNING else logger.info
        log("%s: %s %s", self.rollout.kube.describe(), reason, message)
        try:
            self.rollout.kube.post_event(obj, kind, reason, message)
        except RolloutError as e:
            logger.warning("could not record the Event %s: %s", reason, e)
        if version is not None:
            try:
                self.rollout.registry.tag_decision(version, f"{reason}: {message}")
            except RolloutError as e:
                logger.warning("could not tag version %s with %s: %s", version, reason, e)

    def _write(self, obj: isvc.Json, progress: Progress) -> isvc.Json:
        obj = self.rollout.apply(obj, lambda o: progress_patch(o, progress))
        self.metrics.set_phase(self.model, progress.phase, progress.percent)
        return obj

    # -- the tick --------------------------------------------------------------------------

    def tick(self) -> float:
        """One decision at most; seconds until the next tick."""
        try:
            obj, state = self.rollout.read_state()
            progress = Progress.read(obj)
        except ValueError as e:  # an unreadable record: say so, touch nothing
            raise RefusedError(str(e)) from e
        self.metrics.set_phase(self.model, progress.phase, progress.percent)
        try:
            if progress.phase is Phase.PROGRESSING:
                return self._advance(obj, state, progress)
            if progress.phase is Phase.PROMOTING:
                return self._promote(progress)
            if progress.phase is Phase.ROLLING_BACK:
                return self._roll_back(progress)
            return self._maybe_start(obj, state)
        except ConflictError as e:
            # Someone (helm upgrade, a person) changed the spec between our read and our
            # patch; the API server refused our copy. The next tick rebuilds from theirs.
            logger.info("%s; reading it again", e)
            return min(self.config.schedule.interval_seconds, 1.0)

    # -- idle: the trigger and the refusals ------------------------------------------------

    def _maybe_start(self, obj: isvc.Json, state: RolloutState) -> float:
        poll = self.config.poll_seconds
        challenger = state.aliases.get(CHALLENGER)
        if challenger is None or challenger == state.stable_version:
            return poll
        tags = self.rollout.registry.version_tags(challenger)
        if tags.get(STATUS_TAG) in {PROMOTED, REJECTED}:
            logger.debug("@%s=%s was %s before", CHALLENGER, challenger, tags[STATUS_TAG])
            return poll
        refusal = self._refusal(state, challenger, tags)
        if refusal is not None:
            said = f"{challenger}: {refusal}"
            if said not in self._said:
                self._said.add(said)
                self.record(
                    obj, challenger, "RolloutRefused", f"version {challenger}: {refusal}", WARNING
                )
            return poll
        schedule = self.config.schedule
        percent = schedule.steps[0]
        stable = state.stable_version or ""
        progress = Progress(
            Phase.PROGRESSING, challenger, stable, 0, percent, self.clock(), reason="started"
        )
        uri = version_uri(self.model, challenger)
        obj = self.rollout.apply(
            obj, lambda o: with_progress(isvc.start_patch(o, uri, percent), progress)
        )
        self.metrics.set_phase(self.model, progress.phase, percent)
        self.record(
            obj,
            challenger,
            "RolloutStarted",
            f"version {challenger} takes {percent} % (stable version {stable} the rest); "
            f"steps {','.join(map(str, schedule.steps))}, soak {schedule.soak_seconds:g}s",
        )
        return schedule.soak_seconds

    def _refusal(self, state: RolloutState, version: str, tags: dict[str, str]) -> str | None:
        try:
            # The CLI's own refusals: no champion, a canary (or a promotion) already under
            # way, a version the training gates rejected.
            check_can_start(state, version, tags)
        except RefusedError as e:
            return str(e)
        if state.isvc.ready is not True:
            return (
                f"{self.rollout.kube.describe()} is not Ready; a canary is judged against a "
                "healthy stable revision, so the rollout waits until it is"
            )
        stable = state.stable_version or ""
        wanted = self.rollout.registry.input_signature(stable)
        offered = self.rollout.registry.input_signature(version)
        if wanted is not None and offered != wanted:
            return (
                f"its input signature {_columns(offered)} differs from the stable version "
                f"{stable}'s {_columns(wanted)}: the requests clients send would break; "
                "train it on the same features, or change the clients and promote by hand"
            )
        return None

    # -- progressing: soak, judge, step ----------------------------------------------------

    def _advance(self, obj: isvc.Json, state: RolloutState, progress: Progress) -> float:
        version, percent = progress.version or "", progress.percent
        schedule = self.config.schedule
        if state.spec_version != version or state.isvc.canary_percent != percent:
            return self._someone_else_acted(obj, state, progress)
        now = self.clock()
        elapsed = now - progress.step_started
        if elapsed < schedule.soak_seconds:
            return schedule.soak_seconds - elapsed
        try:
            analysis = self.rollout.collect(
                progress.stable or "", version, f"{max(1, math.ceil(elapsed))}s"
            )
        except UnreachableError as e:
            return self._unjudged(obj, progress, now, e)
        self.metrics.count_analysis(self.model, analysis.verdict)
        decision, reason = decide_step(analysis, percent, elapsed, schedule)
        logger.info(
            "%s: analysis of version %s at %s %% after %.0fs: %s (%s)",
            self.rollout.kube.describe(),
            version,
            percent,
            elapsed,
            analysis.verdict.value,
            analysis.reason,
        )
        if decision is StepDecision.FAILED:
            return self._begin(obj, progress.but(phase=Phase.ROLLING_BACK, reason=reason))
        if decision is StepDecision.WAIT:
            if progress.unjudged_since is not None:
                self._write(obj, progress.but(unjudged_since=None))
            return schedule.interval_seconds
        following = schedule.steps[progress.step + 1]
        if following >= 100:
            return self._begin(obj, progress.but(phase=Phase.PROMOTING, reason=reason))
        stepped = progress.but(
            step=progress.step + 1, percent=following, step_started=now, unjudged_since=None
        )
        obj = self.rollout.apply(
            obj, lambda o: with_progress(isvc.traffic_patch(o, following), stepped)
        )
        self.metrics.set_phase(self.model, stepped.phase, following)
        self.record(
            obj, version, "RolloutStepped", f"version {version} takes {following} % ({reason})"
        )
        return schedule.soak_seconds

    def _unjudged(
        self, obj: isvc.Json, progress: Progress, now: float, error: UnreachableError
    ) -> float:
        """The analysis could not run: wait out the grace, then roll back (no evidence is
        not a pass)."""
        self.metrics.count_analysis(self.model, "unavailable")
        since = progress.unjudged_since if progress.unjudged_since is not None else now
        waited = now - since
        if waited >= self.config.grace_seconds:
            reason = (
                f"the soak at {progress.percent} % could not be judged for {waited:.0f}s "
                f"(grace {self.config.grace_seconds:g}s): {error}"
            )
            return self._begin(obj, progress.but(phase=Phase.ROLLING_BACK, reason=reason))
        logger.warning(
            "%s: analysis unavailable (%s); rolling back after %.0fs more without one",
            self.rollout.kube.describe(),
            error,
            self.config.grace_seconds - waited,
        )
        if progress.unjudged_since is None:
            self._write(obj, progress.but(unjudged_since=since))
        return min(self.config.schedule.interval_seconds, self.config.grace_seconds - waited)

    def _someone_else_acted(self, obj: isvc.Json, state: RolloutState, progress: Progress) -> float:
        version = progress.version or ""
        found = f"the spec serves version {state.spec_version} at {state.isvc.canary_percent} %"
        if state.spec_version == version and state.stable_version != version:
            reason = f"the canary's traffic was changed by someone else ({found})"
            return self._begin(obj, progress.but(phase=Phase.ROLLING_BACK, reason=reason))
        reason = f"someone else took over the rollout of version {version} ({found})"
        self._write(obj, progress.but(phase=Phase.IDLE, outcome="abandoned", reason=reason))
        self.record(obj, version, "RolloutAbandoned", reason, WARNING)
        return self.config.poll_seconds

    # -- the ends: written as a phase first, then carried out (idempotent) -----------------

    def _begin(self, obj: isvc.Json, progress: Progress) -> float:
        self._write(obj, progress)
        if progress.phase is Phase.PROMOTING:
            return self._promote(progress)
        return self._roll_back(progress)

    def _promote(self, progress: Progress) -> float:
        version = progress.version or ""
        try:
            self.rollout.do_promote()
        except RefusedError:
            # Killed after the promotion and before the record: done if @champion moved.
            if self.rollout.registry.aliases().get("champion") != version:
                raise
        obj, _ = self.rollout.read_state()
        self._write(obj, progress.but(phase=Phase.IDLE, outcome=PROMOTED))
        self.record(
            obj,
            version,
            "RolloutPromoted",
            f"version {version} takes 100 % and is @champion ({progress.reason})",
        )
        return self.config.poll_seconds

    def _roll_back(self, progress: Progress) -> float:
        version = progress.version or ""
        try:
            self.rollout.do_rollback(progress.reason)
        except RefusedError:
            # Killed after the rollback's patches: make sure the version is tagged.
            if self.rollout.registry.version_tags(version).get(STATUS_TAG) != REJECTED:
                self.rollout.registry_action(
                    "tag", version, status=REJECTED, reason=progress.reason
                )
        obj, _ = self.rollout.read_state()
        self._write(obj, progress.but(phase=Phase.IDLE, outcome="rolled_back"))
        self.record(
            obj,
            version,
            "RolloutRolledBack",
            f"version {version} rejected, all traffic on stable version {progress.stable}: "
            f"{progress.reason}",
            WARNING,
        )
        return self.config.poll_seconds


def _columns(signature: object) -> str:
    """A short description of a signature's input columns, for a refusal's message."""
    if isinstance(signature, list):
        names = [str(c.get("name", "?")) for c in signature if isinstance(c, dict)]
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        return f"({len(names)} columns: {shown})"
    return "(none)" if signature is None else f"({str(signature)[:80]})"
