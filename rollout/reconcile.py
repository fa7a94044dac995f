"""One InferenceService's rollout, advanced one decision at a time (what the controller runs).

`tick()` reads the InferenceService, the rollout's record (progress.py, on the Lease
`<isvc>-rollout`) and the registry, takes at most one decision, writes it, and says how
long to wait before the next tick. A controller restarted at any moment takes its
lease back (its identity is fixed) and ticks on from the record. The judgement and
the actions are the CLI's own: `Rollout` (commands.py) reads the state, sends the
guarded merge patches, promotes and rolls back; `decide_step` (plan.py) judges a step
exactly as `auto` does.

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

from contract.registry_tags import PROMOTED, ROLLED_BACK, ROLLOUT_STATUS
from contract.uris import CHALLENGER, version_uri
from rollout import isvc
from rollout.commands import SETTLE_POLL_SECONDS, Rollout
from rollout.controller_metrics import ControllerMetrics
from rollout.errors import (
    ConflictError,
    LockLostError,
    RefusedError,
    RolloutError,
    UnreachableError,
)
from rollout.lock import RENEW_EVERY_SECONDS, RolloutLock
from rollout.plan import Schedule, StepDecision, decide_step
from rollout.progress import ANNOTATION, Phase, Progress
from rollout.settings import LOCAL
from rollout.state import RolloutState, check_can_start

logger = logging.getLogger(__name__)

NORMAL, WARNING = "Normal", "Warning"
CONTROLLER_IDENTITY = "mlops-rollout-controller"
"""The holder identity of the controller's leases: fixed, so a restarted controller (one
replica, Recreate) knows its own lease; the CLI's `auto` is `host:pid:random`."""


@dataclass(frozen=True)
class ControllerConfig:
    schedule: Schedule
    poll_seconds: float = 30.0
    """How often the registry is asked for a new @challenger while no rollout runs."""
    grace_seconds: float = 120.0
    """How long a step's analysis may fail to run (Prometheus down) before rolling back."""
    ready_timeout_seconds: float = 300.0
    """After a rollback, how long the restored revision may take to get Ready before the
    rollout ends with `canaryTrafficPercent: 0` left in the spec (and a Warning)."""
    print_analyses: bool = False
    """Print each analysis's verdict table (and its JSON line) to stdout, as the CLI's
    `auto` does: the local mode's (`make demo` shows them); in the cluster, the log line."""

    def __post_init__(self) -> None:
        if self.ready_timeout_seconds < 0:
            raise ValueError(
                f"--ready-timeout must be >= 0 seconds, got {self.ready_timeout_seconds:g}"
            )
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
        self._lock: RolloutLock | None = None
        self.progress = Progress()
        """The record as last written (while the lease is held)."""

    @property
    def lock(self) -> RolloutLock:
        if self._lock is None:
            kube = self.rollout.kube
            self._lock = RolloutLock(
                kube.leases(),
                kube.name,
                identity=CONTROLLER_IDENTITY,
                clock=self.clock,
            )
        return self._lock

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

    def _write(self, progress: Progress) -> None:
        """Persist the record: take the lease for a new rollout, renew it with the record,
        delete it when the rollout is over. RefusedError when another `auto` holds it."""
        lock, version = self.lock, progress.version or ""
        lock.annotations = {ANNOTATION: progress.to_json()}
        if progress.phase is Phase.IDLE:
            lock.release()
        elif lock.held:
            lock.renew_now(version)
        else:
            lock.acquire(version)
        self.progress = progress
        self.metrics.set_phase(self.model, progress.phase, progress.percent)

    def _read_record(self) -> Progress:
        if self.lock.held:
            return self.progress
        holder = self.lock.adopt()
        if holder is None or not self.lock.held:
            return Progress()  # no lease, or another `auto` holds it (refused at the start)
        try:
            progress = Progress.parse((holder.annotations or {}).get(ANNOTATION))
        except ValueError:
            self.lock.forget()  # touch nothing until a person looks: every tick says why
            raise
        self.progress = progress  # the lease is held again: later ticks read it from here
        logger.info(
            "%s: resuming the rollout of version %s (%s at %s %%)",
            self.rollout.kube.describe(),
            progress.version,
            progress.phase.value,
            progress.percent,
        )
        return progress

    # -- the tick --------------------------------------------------------------------------

    def tick(self) -> float:
        """One decision at most; seconds until the next tick."""
        obj, state = self.rollout.read_state()
        try:
            progress = self._read_record()
        except ValueError as e:  # an unreadable record: say so, touch nothing
            settings = self.rollout.settings
            where = (
                f" (locally: remove {settings.local_dir}/leases/{self.lock.name}.json)"
                if settings.target == LOCAL
                else ""
            )
            raise RefusedError(f"{e}{where}") from e
        self.metrics.set_phase(self.model, progress.phase, progress.percent)
        try:
            if progress.phase is Phase.PROGRESSING:
                delay = self._advance(obj, state, progress)
            elif progress.phase is Phase.PROMOTING:
                delay = self._promote(progress)
            elif progress.phase is Phase.ROLLING_BACK:
                delay = self._roll_back(progress)
            else:
                delay = self._maybe_start(obj, state)
        except ConflictError as e:
            # Someone (helm upgrade, a person) changed the spec between our read and our
            # patch; the API server refused our copy. The next tick rebuilds from theirs.
            logger.info("%s; reading it again", e)
            return min(self.config.schedule.interval_seconds, 1.0)
        except LockLostError as e:
            logger.warning("%s", e)
            self.progress = Progress()
            return self.config.poll_seconds
        if self.lock.held:
            # Wake in time to renew the lease, so no one takes it for a dead controller's.
            self.lock.renew_if_due(self.progress.version or "")
            return min(delay, RENEW_EVERY_SECONDS)
        return delay

    # -- idle: the trigger and the refusals ------------------------------------------------

    def _maybe_start(self, obj: isvc.Json, state: RolloutState) -> float:
        poll = self.config.poll_seconds
        challenger = state.aliases.get(CHALLENGER)
        if challenger is None or challenger == state.stable_version:
            return poll
        tags = self.rollout.registry.version_tags(challenger)
        if tags.get(ROLLOUT_STATUS) in {PROMOTED, ROLLED_BACK}:
            logger.debug("@%s=%s was %s before", CHALLENGER, challenger, tags[ROLLOUT_STATUS])
            return poll
        refusal = self._refusal(state, challenger, tags)
        if refusal is not None:
            return self._refuse(obj, challenger, refusal)
        schedule = self.config.schedule
        percent = schedule.steps[0]
        stable = state.stable_version or ""
        progress = Progress(
            Phase.PROGRESSING, challenger, stable, 0, percent, self.clock(), reason="started"
        )
        try:
            self._write(progress)
        except RefusedError as e:  # a CLI `auto` holds the lease
            return self._refuse(obj, challenger, str(e))
        obj = self._start(obj, progress)
        self.record(
            obj,
            challenger,
            "RolloutStarted",
            f"version {challenger} takes {percent} % (stable version {stable} the rest); "
            f"steps {','.join(map(str, schedule.steps))}, soak {schedule.soak_seconds:g}s",
        )
        return schedule.soak_seconds

    def _refuse(self, obj: isvc.Json, version: str, refusal: str) -> float:
        said = f"{version}: {refusal}"
        if said not in self._said:
            self._said.add(said)
            self.record(obj, version, "RolloutRefused", f"version {version}: {refusal}", WARNING)
        return self.config.poll_seconds

    def _start(self, obj: isvc.Json, progress: Progress) -> isvc.Json:
        uri = version_uri(self.model, progress.version or "")
        return self.rollout.apply(obj, lambda o: isvc.start_patch(o, uri, progress.percent))

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
            if not self._finish_write_ahead(obj, state, progress):
                return self._someone_else_acted(obj, state, progress)
            return schedule.soak_seconds
        now = self.clock()
        elapsed = now - progress.step_started
        if elapsed < schedule.soak_seconds:
            return schedule.soak_seconds - elapsed
        window = f"{max(1, math.ceil(elapsed))}s"
        try:
            analysis = self.rollout.collect(progress.stable or "", version, window)
        except UnreachableError as e:
            return self._unjudged(obj, progress, now, e)
        self.metrics.count_analysis(self.model, analysis.verdict)
        if self.config.print_analyses:
            self.rollout.print_analysis(analysis, window)
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
                self._write(progress.but(unjudged_since=None))
            return schedule.interval_seconds
        following = schedule.steps[progress.step + 1]
        if following >= 100:
            return self._begin(obj, progress.but(phase=Phase.PROMOTING, reason=reason))
        stepped = progress.but(
            step=progress.step + 1, percent=following, step_started=now, unjudged_since=None
        )
        self._write(stepped)
        obj = self.rollout.apply(obj, lambda o: isvc.traffic_patch(o, following))
        self.record(
            obj, version, "RolloutStepped", f"version {version} takes {following} % ({reason})"
        )
        return schedule.soak_seconds

    def _finish_write_ahead(self, obj: isvc.Json, state: RolloutState, progress: Progress) -> bool:
        """The record is one action ahead of the spec (killed between writing it and
        acting): act now. False when the spec is in no state this controller left it in."""
        version, steps = progress.version or "", self.config.schedule.steps
        if progress.step == 0 and state.spec_version == progress.stable:
            if state.canary_running or state.pending_promotion:
                return False
            logger.info("%s: the canary was not started yet; starting it", version)
            self._start(obj, progress)
            return True
        previous = steps[progress.step - 1] if progress.step > 0 else None
        if state.spec_version == version and state.isvc.canary_percent == previous:
            logger.info(
                "%s: the step to %s %% was not sent yet; sending it", version, progress.percent
            )
            self.rollout.apply(obj, lambda o: isvc.traffic_patch(o, progress.percent))
            return True
        return False

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
            self._write(progress.but(unjudged_since=since))
        return min(self.config.schedule.interval_seconds, self.config.grace_seconds - waited)

    def _someone_else_acted(self, obj: isvc.Json, state: RolloutState, progress: Progress) -> float:
        version = progress.version or ""
        found = f"the spec serves version {state.spec_version} at {state.isvc.canary_percent} %"
        if state.spec_version == version and state.stable_version != version:
            reason = f"the canary's traffic was changed by someone else ({found})"
            return self._begin(obj, progress.but(phase=Phase.ROLLING_BACK, reason=reason))
        reason = f"someone else took over the rollout of version {version} ({found})"
        self._write(progress.but(phase=Phase.IDLE, outcome="abandoned", reason=reason))
        self.record(obj, version, "RolloutAbandoned", reason, WARNING)
        return self.config.poll_seconds

    # -- the ends: written as a phase first, then carried out (idempotent) -----------------

    def _begin(self, obj: isvc.Json, progress: Progress) -> float:
        del obj  # promotion and rollback read the InferenceService afresh
        self._write(progress)
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
        self._write(progress.but(phase=Phase.IDLE, outcome=PROMOTED))
        self.record(
            obj,
            version,
            "RolloutPromoted",
            f"version {version} takes 100 % and is @champion ({progress.reason})",
        )
        return self.config.poll_seconds

    def _roll_back(self, progress: Progress) -> float:
        """Traffic to 0, the stable spec restored, the version tagged; then `_settle`."""
        version = progress.version or ""
        if progress.settle_since is not None:
            return self._settle(progress)
        if progress.canary_revision is None:
            _, state = self.rollout.read_state()
            if state.spec_version == version and state.spec_version != state.stable_version:
                # Write-ahead: which revision served the canary, before the restore makes
                # another; after a restart the wait for "another, and Ready" needs it.
                progress = progress.but(canary_revision=state.isvc.latest_created_revision)
                self._write(progress)
        try:
            self.rollout.do_rollback(progress.reason)
        except RefusedError:
            # Killed after the rollback's patches: make sure the version is tagged.
            if self.rollout.registry.version_tags(version).get(ROLLOUT_STATUS) != ROLLED_BACK:
                self.rollout.registry_action(
                    "tag", version, status=ROLLED_BACK, reason=progress.reason
                )
        progress = progress.but(settle_since=self.clock())
        self._write(progress)
        return self._settle(progress)

    def _settle(self, progress: Progress) -> float:
        """Remove `canaryTrafficPercent: 0` once the restored revision is Ready (never
        before: until then the latest ready revision is the rejected canary's); the
        rollout ends then, or at --ready-timeout with the 0 kept and a Warning."""
        version = progress.version or ""
        obj, why = self.rollout.settle_check(progress.canary_revision)
        if obj is not None:
            try:
                self.rollout.clear_rollback(obj, progress.canary_revision)
                why = None
            except RefusedError as e:
                why = str(e)
        elif why is None or why.startswith("the spec changed"):
            obj = None
        waited = self.clock() - (progress.settle_since or self.clock())
        timeout = self.config.ready_timeout_seconds
        if why is not None and not why.startswith("the spec changed") and waited < timeout:
            return min(SETTLE_POLL_SECONDS, max(0.05, timeout - waited))
        current, _ = self.rollout.read_state()
        self._write(progress.but(phase=Phase.IDLE, outcome="rolled_back"))
        if why is not None:
            self.record(
                current,
                version,
                "RolloutSpecKeepsZero",
                f"the spec keeps canaryTrafficPercent: 0 ({why}; waited {waited:.0f}s, "
                f"--ready-timeout {timeout:g}s); the stable version {progress.stable} still "
                "takes 100 %; `python -m rollout rollback` removes the field once the "
                "restored revision is Ready",
                WARNING,
            )
        self.record(
            current,
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
