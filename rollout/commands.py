"""The subcommands: read the state, decide (state.py, analysis.py, plan.py), act, report.

Kubernetes, MLflow and Prometheus are reached through factories, so each is made
only when a command needs it (and tests can point them anywhere).
"""

from __future__ import annotations

import functools
import logging
import random
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from contract import uris
from contract.registry_tags import PROMOTED, ROLLED_BACK
from contract.uris import is_version_number, version_uri
from rollout import isvc, report
from rollout.analysis import Analysis, Verdict, evaluate
from rollout.errors import ConfigError, ConflictError, ExitCode, RefusedError, UnreachableError
from rollout.kube import InferenceServiceApi, connect
from rollout.lock import RENEW_EVERY_SECONDS, RolloutLock
from rollout.plan import Outcome, run_schedule
from rollout.prometheus import Prometheus, version_stats
from rollout.registry import Registry
from rollout.settings import LOCAL, Settings
from rollout.state import (
    RolloutState,
    check_can_promote,
    check_can_roll_back,
    check_can_start,
)

logger = logging.getLogger(__name__)

PATCH_ATTEMPTS = 5
BACKOFF_BASE_SECONDS = 0.2
"""Backoff before retry n is BACKOFF_BASE_SECONDS * 2**(n-1), times a jitter in [0.5, 1]:
0.1-0.2 s, 0.2-0.4, 0.4-0.8, 0.8-1.6 (1.5-3 s in all), so two writers that met once
spread apart instead of meeting again at every attempt."""
_jitter = random.Random()
SETTLE_POLL_SECONDS = 1.0
"""How often a rollback looks whether the restored revision is Ready."""
VERDICT_EXIT = {
    Verdict.PASS: ExitCode.OK,
    Verdict.FAIL: ExitCode.FAILED,
    Verdict.INCONCLUSIVE: ExitCode.INCONCLUSIVE,
}


class Rollout:
    """One model's rollout on one InferenceService."""

    def __init__(
        self,
        settings: Settings,
        out: TextIO | None = None,
        *,
        kube_factory: Callable[[Settings], InferenceServiceApi] | None = None,
        registry_factory: Callable[[Settings], Registry] = lambda s: Registry(
            s.tracking_uri, s.model_name
        ),
        prometheus_factory: Callable[[Settings], Prometheus] = lambda s: Prometheus(
            s.prometheus_url
        ),
        lock_factory: Callable[[Rollout], RolloutLock] = lambda r: RolloutLock(
            r.kube.leases(), r.kube.name
        ),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._lock_factory = lock_factory
        self.out = out or sys.stdout
        self._kube_factory = kube_factory or connect_target
        self._registry_factory = registry_factory
        self._prometheus_factory = prometheus_factory
        self._sleep = sleep
        self._kube: InferenceServiceApi | None = None
        self._registry: Registry | None = None
        self._prometheus: Prometheus | None = None
        self.canary_revision: str | None = None
        """The revision that served the canary, as the last `do_rollback` read it."""

    # -- the outside systems, made on first use --------------------------------------------

    @property
    def kube(self) -> InferenceServiceApi:
        if self._kube is None:
            self._kube = self._kube_factory(self.settings)
        return self._kube

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self._registry_factory(self.settings)
        return self._registry

    @property
    def prometheus(self) -> Prometheus:
        if self._prometheus is None:
            self._prometheus = self._prometheus_factory(self.settings)
        return self._prometheus

    def emit(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # -- reading ---------------------------------------------------------------------------

    def read_state(self) -> tuple[isvc.Json, RolloutState]:
        obj = self.kube.get()
        try:
            parsed = isvc.parse(obj)
        except isvc.IsvcShapeError as e:
            raise ConfigError(f"{self.kube.describe()}: {e}") from e
        aliases = self.registry.aliases()
        try:
            uri = uris.parse_model_uri(parsed.model_uri)
        except uris.InvalidModelUri as e:
            raise ConfigError(f"{self.kube.describe()}: {e}") from e
        if uri.name != self.settings.model_name:
            raise ConfigError(
                f"{self.kube.describe()} serves model {uri.name!r}, not "
                f"{self.settings.model_name!r}: check --model-name and --isvc"
            )
        spec_version = uri.version or aliases.get(uri.alias or "")
        if spec_version is None:
            raise ConfigError(
                f"{self.kube.describe()} serves {parsed.model_uri}, an alias the registry "
                "does not have"
            )
        return obj, RolloutState(parsed, aliases, spec_version, self.settings.target == LOCAL)

    # -- writing ---------------------------------------------------------------------------

    def apply(self, obj: isvc.Json, make_patch: Callable[[isvc.Json], isvc.Json]) -> isvc.Json:
        """Send one merge patch built from `obj`; on 409, re-read, and rebuild it if only
        the status or metadata moved (the KServe controller writes status often during a
        rollout), after a backoff with jitter; a spec change by someone else stops us.

        With --dry-run the patch goes to the API server as a dry run (`dryRun=All`): it
        is authorized, admitted and validated like the real one, so a read-only identity
        fails here, not at the real run; nothing is stored."""
        dry_run = self.settings.dry_run
        generation = (obj.get("metadata") or {}).get("generation")
        began = time.monotonic()
        for attempt in range(1, PATCH_ATTEMPTS + 1):
            body = make_patch(obj)
            try:
                answer = self.kube.patch(body, dry_run=dry_run)
            except ConflictError:
                fresh = self.kube.get()
                if (fresh.get("metadata") or {}).get("generation") != generation:
                    raise ConflictError(
                        f"someone changed the spec of {self.kube.describe()} while we patched "
                        "it; check `status` and run the command again"
                    ) from None
                changed = what_changed(obj, fresh)
                obj = fresh
                if attempt == PATCH_ATTEMPTS:
                    break
                delay = backoff_seconds(attempt)
                logger.info(
                    "409 conflict on attempt %d: %s changed since we read it; retrying in %.2fs",
                    attempt,
                    changed,
                    delay,
                )
                self._sleep(delay)
                continue
            if not dry_run:
                return answer
            self.emit(
                report.json_line(
                    {
                        "dry_run": True,
                        "method": "PATCH",
                        "path": self.kube.path,
                        "content_type": isvc.MERGE_PATCH,
                        "body": body,
                    }
                )
            )
            # Chained dry-run patches build on what this one would leave, with the stored
            # resourceVersion (a dry run stores nothing, so it still holds).
            return dict(isvc.merge_patch(obj, body))
        raise ConflictError(
            f"{self.kube.describe()} kept changing: {PATCH_ATTEMPTS} attempts over "
            f"{time.monotonic() - began:.1f}s all met a newer resourceVersion; "
            "run the command again"
        )

    def registry_action(self, action: str, version: str, **details: str) -> None:
        if self.settings.dry_run:
            payload = {"dry_run": True, "registry": action, "model_name": self.settings.model_name}
            self.emit(report.json_line({**payload, "version": version, **details}))
            return
        if action == "set_champion":
            self.registry.set_champion(version)
        self.registry.tag_version(version, details["status"], details["reason"])

    # -- commands --------------------------------------------------------------------------

    def status(self) -> int:
        _, state = self.read_state()
        lock = self.lock_status()
        self.emit(report.status_text(state))
        self.emit(f"auto lock               {report.lock_text(lock)}")
        self.emit(report.json_line({**state.summary(), "auto_lock": lock}))
        return ExitCode.OK

    def lock_status(self) -> dict[str, Any] | None:
        """Who holds the `auto` lock (None: nobody); a lock we may not read is reported as
        such, not as an error: `status` needs only get on the InferenceService."""
        lock = self._lock_factory(self)
        try:
            found = lock.read()
        except UnreachableError as e:
            return {"lease": lock.describe(), "unknown": str(e)}
        if found is None:
            return None
        holder, _ = found
        renewed = None if holder.renewed is None else round(time.time() - holder.renewed, 1)
        return {
            "lease": lock.describe(),
            "holder": holder.identity,
            "version": holder.version,
            "renewed_seconds_ago": renewed,
            "expired": renewed is not None and renewed > holder.duration,
        }

    def _resolve_start(self, state: RolloutState, version: str | None = None) -> str:
        version = version or self.registry.resolve(self.settings.version_ref or "", state.aliases)
        tags = self.registry.version_tags(version)
        check_can_start(state, version, tags, self.settings.allow_rejected)
        return version

    def start(self) -> int:
        obj, state = self.read_state()
        version = self._resolve_start(state)
        uri = version_uri(self.settings.model_name, version)
        percent = self.settings.percent
        self.apply(obj, lambda o: isvc.start_patch(o, uri, percent))
        self.emit(
            f"canary {'planned' if self.settings.dry_run else 'started'}: version {version} "
            f"takes {percent} %, stable version {state.stable_version} the rest"
        )
        self.emit(
            report.json_line(
                {
                    "action": "start",
                    "version": version,
                    "stable_version": state.stable_version,
                    "percent": percent,
                    "model_uri": uri,
                    "dry_run": self.settings.dry_run,
                }
            )
        )
        return ExitCode.OK

    def _analysis_versions(self) -> tuple[str, str]:
        s = self.settings
        if s.canary_ref is not None:
            refs = [s.stable_ref or "champion", s.canary_ref]
            if all(is_version_number(r) for r in refs):
                return refs[0], refs[1]  # no registry needed: a plain local demo works too
            return self.registry.resolve(refs[0]), self.registry.resolve(refs[1])
        _, state = self.read_state()
        if not state.canary_running or state.stable_version is None:
            raise RefusedError(
                f"no canary is running on {self.kube.describe()}; pass --stable and --canary "
                "to compare two versions anyway"
            )
        return state.stable_version, state.spec_version

    def collect(self, stable: str, canary: str, window: str) -> Analysis:
        at = time.time()  # one instant for every query, so the numbers agree
        model = self.settings.model_name
        stats = [
            version_stats(self.prometheus, model, v, window, at, self.settings.extra_matchers)
            for v in (stable, canary)
        ]
        return evaluate(stats[0], stats[1], self.settings.thresholds)

    def print_analysis(self, analysis: Analysis, window: str) -> None:
        self.emit(report.analysis_table(analysis, self.settings.model_name, window))
        self.emit(
            report.json_line(report.analysis_json(analysis, self.settings.model_name, window))
        )

    def analyze(self) -> int:
        stable, canary = self._analysis_versions()
        if stable == canary:
            raise RefusedError(f"stable and canary are the same version ({stable})")
        analysis = self.collect(stable, canary, self.settings.window)
        self.print_analysis(analysis, self.settings.window)
        return VERDICT_EXIT[analysis.verdict]

    def do_promote(self) -> str:
        obj, state = self.read_state()
        version = check_can_promote(state)
        if state.isvc.canary_percent is not None:
            self.apply(obj, isvc.promote_patch)
        self.registry_action(
            "set_champion",
            version,
            status=PROMOTED,
            reason=f"promoted over version {state.stable_version}",
        )
        return version

    def promote(self) -> int:
        dry = self.settings.dry_run
        version = self.do_promote()
        self.emit(f"{'would promote' if dry else 'promoted'} version {version}: @champion moved")
        self.emit(report.json_line({"action": "promote", "version": version, "dry_run": dry}))
        return ExitCode.OK

    def do_rollback(self, reason: str) -> tuple[str | None, str]:
        """Traffic first (0 %), then the spec; returns (rejected version, stable version).
        `canary_revision` keeps the revision that served the canary (read before the
        restore) for `settle_rollback`."""
        obj, state = self.read_state()
        candidate = check_can_roll_back(state)
        stable = state.stable_version or ""
        if state.spec_version != stable:
            self.canary_revision = state.isvc.latest_created_revision
        if state.isvc.canary_percent != 0:
            obj = self.apply(obj, lambda o: isvc.traffic_patch(o, 0))
        stable_uri = version_uri(self.settings.model_name, stable)
        if state.spec_version != stable:
            self.apply(obj, lambda o: isvc.restore_patch(o, stable_uri))
        rejected = candidate if candidate != stable else None
        if rejected is not None:
            self.registry_action("tag", rejected, status=ROLLED_BACK, reason=reason)
        return rejected, stable

    def settle_check(self, canary_revision: str | None) -> tuple[isvc.Json | None, str | None]:
        """After a rollback: (object to clear, None) when the restored revision is Ready;
        (None, None) when there is nothing left to clear; (None, why) while it must wait."""
        obj, state = self.read_state()
        percent = state.isvc.canary_percent
        if percent is None:
            return None, None
        if percent != 0 or state.spec_version != state.stable_version:
            return None, (
                f"the spec changed meanwhile (it serves version {state.spec_version} at "
                f"{percent} %), so canaryTrafficPercent is left as it is"
            )
        pending = isvc.restored_revision_pending(state.isvc, canary_revision)
        return (obj, None) if pending is None else (None, pending)

    def clear_rollback(self, obj: isvc.Json, canary_revision: str | None) -> None:
        """Remove `canaryTrafficPercent: 0`: 100 % to the restored (stable) revision. The
        patch is rebuilt on a 409 only if the object read again still allows it."""

        def patch(o: isvc.Json) -> isvc.Json:
            pending = isvc.restored_revision_pending(isvc.parse(o), canary_revision)
            if pending is not None:
                raise RefusedError(pending)
            return isvc.promote_patch(o)

        self.apply(obj, patch)

    def settle_rollback(self, canary_revision: str | None, timeout: float) -> str | None:
        """Wait (at most `timeout` s) for the restored revision, then clear the spec; None
        when the spec is clean, else why it keeps `canaryTrafficPercent: 0`."""
        deadline = time.monotonic() + timeout
        while True:
            obj, why = self.settle_check(canary_revision)
            if obj is not None:
                try:
                    self.clear_rollback(obj, canary_revision)
                    return None
                except RefusedError as e:
                    why = str(e)
            elif why is None or why.startswith("the spec changed"):
                return why
            left = deadline - time.monotonic()
            if left <= 0:
                return f"{why} after {timeout:g}s"
            self._sleep(min(SETTLE_POLL_SECONDS, left))

    def rollback(self) -> int:
        dry = self.settings.dry_run
        self.canary_revision = None
        try:
            rejected, stable = self.do_rollback(self.settings.reason)
        except RefusedError:
            # Rolled back before, but the spec kept 0 % (the restored revision was not
            # Ready in time): finish that, nothing else.
            _, state = self.read_state()
            if not (state.rolled_back and state.spec_version == state.stable_version):
                raise
            rejected, stable = None, state.stable_version or ""
        unsettled = (
            None
            if dry
            else self.settle_rollback(self.canary_revision, self.settings.ready_timeout_seconds)
        )
        self.emit(
            f"{'would roll back' if dry else 'rolled back'}: all traffic on "
            f"stable version {stable}; version {rejected or '-'} tagged rejected"
        )
        if unsettled is not None:
            self.emit(
                f"the spec keeps canaryTrafficPercent: 0 ({unsettled}); the stable version "
                "still takes 100 %. Run `rollback` again to finish (it removes the field "
                "once the restored revision is Ready)"
            )
        self.emit(
            report.json_line(
                {
                    "action": "rollback",
                    "rejected_version": rejected,
                    "stable_version": stable,
                    "reason": self.settings.reason,
                    "dry_run": dry,
                    "spec_clean": None if dry else unsettled is None,
                }
            )
        )
        return ExitCode.OK

    def auto(self) -> int:
        """Take the rollout lock first (rollout/lock.py), then read and act: a second
        `auto` on the same InferenceService is refused (exit 2) before it reads anything."""
        ref = self.settings.version_ref or ""
        lock = self._lock_factory(self)
        lock.acquire(ref, dry_run=self.settings.dry_run)
        try:
            return self._auto(lock, ref)
        finally:
            lock.release()

    def _auto(self, lock: RolloutLock, ref: str) -> int:
        self.canary_revision = None
        obj, state = self.read_state()
        schedule = self.settings.schedule
        already_at: int | None = None
        version = self.registry.resolve(ref, state.aliases)
        if state.canary_running and state.spec_version == version:
            already_at = state.isvc.canary_percent  # adopt the canary `start` began
            logger.info("adopting the running canary of version %s at %s %%", version, already_at)
        else:
            self._resolve_start(state, version)
        stable = state.stable_version or ""
        if self.settings.dry_run:
            return self._auto_dry_run(obj, version, already_at)

        def sleep_holding_the_lock(seconds: float) -> None:
            # Waits are cut into slices so the lease is renewed while the step soaks.
            left = seconds
            while left > 0:
                chunk = min(left, RENEW_EVERY_SECONDS)
                self._sleep(chunk)
                left -= chunk
                lock.renew_if_due(ref)

        # The canary starts inside run_schedule, so an interrupt right after it rolls back.
        ops = _AutoOps(self, stable, version, start_from=None if already_at is not None else obj)
        result = run_schedule(
            ops,
            schedule,
            already_at=already_at,
            on_analysis=lambda _p, a: self.print_analysis(a, f"{ops.last_window}s"),
            sleep=sleep_holding_the_lock,
        )
        self.emit(f"{result.outcome.value.replace('_', ' ')}: version {version} ({result.reason})")
        if result.outcome is Outcome.ROLLED_BACK:
            unsettled = self.settle_rollback(
                self.canary_revision, self.settings.ready_timeout_seconds
            )
            if unsettled is not None:
                self.emit(
                    f"the spec keeps canaryTrafficPercent: 0 ({unsettled}); the stable "
                    "version still takes 100 %. Run `rollback` to finish"
                )
        self.emit(
            report.json_line(
                {
                    "action": "auto",
                    "outcome": result.outcome.value,
                    "version": version,
                    "stable_version": stable,
                    "reason": result.reason,
                    "steps": [{"percent": r.percent, "analyses": r.analyses} for r in result.steps],
                }
            )
        )
        return ExitCode.OK if result.outcome is Outcome.PROMOTED else ExitCode.FAILED

    def _auto_dry_run(self, obj: isvc.Json, version: str, already_at: int | None) -> int:
        """Print every patch the schedule would send on success, then the rollback's."""
        uri = version_uri(self.settings.model_name, version)
        steps = [s for s in self.settings.schedule.steps if s < 100]
        if already_at is None:
            obj = self.apply(obj, lambda o: isvc.start_patch(o, uri, steps[0]))
            already_at = steps[0]
        for percent in (s for s in steps if s > already_at):
            obj = self.apply(obj, functools.partial(_traffic_patch, percent=percent))
        self.apply(obj, isvc.promote_patch)
        self.registry_action("set_champion", version, status=PROMOTED, reason="(on success)")
        self.emit(report.json_line({"dry_run": True, "on_failure": "rollback", "version": version}))
        return ExitCode.OK


def connect_target(settings: Settings) -> InferenceServiceApi:
    """The InferenceService on the API server (`--target kubernetes`) or in the local
    cluster's folder (`--target local`, rollout/local.py): the same surface."""
    if settings.target == LOCAL:
        from rollout.local import connect_local

        return connect_local(settings.local_dir, settings.kube.name)
    return connect(settings.kube)


def backoff_seconds(attempt: int) -> float:
    return BACKOFF_BASE_SECONDS * 2.0 ** (attempt - 1) * _jitter.uniform(0.5, 1.0)


_UNTRACKED_METADATA = {"resourceVersion", "managedFields", "generation"}


def what_changed(before: isvc.Json, after: isvc.Json) -> str:
    """Which parts of the object moved between two reads, for the 409 log line:
    `status`, `metadata.labels`, `metadata.annotations`... (the spec is the caller's)."""
    changed = []
    old_meta, new_meta = before.get("metadata") or {}, after.get("metadata") or {}
    for key in sorted(set(old_meta) | set(new_meta)):
        if key not in _UNTRACKED_METADATA and old_meta.get(key) != new_meta.get(key):
            changed.append(f"metadata.{key}")
    if before.get("status") != after.get("status"):
        changed.append("status")
    if not changed and old_meta.get("managedFields") != new_meta.get("managedFields"):
        changed.append("metadata.managedFields")
    return ", ".join(changed) or "nothing but the resourceVersion"


def _traffic_patch(obj: isvc.Json, percent: int) -> isvc.Json:
    return isvc.traffic_patch(obj, percent)


class _AutoOps:
    """What `run_schedule` does to the world, through the Rollout's clients."""

    def __init__(
        self, rollout: Rollout, stable: str, canary: str, start_from: isvc.Json | None
    ) -> None:
        self.rollout = rollout
        self.stable = stable
        self.canary = canary
        self.start_from = start_from
        """The object `auto` checked before starting; None when the canary already runs."""
        self.last_window = 0

    def set_canary_percent(self, percent: int) -> None:
        if self.start_from is not None:
            uri = version_uri(self.rollout.settings.model_name, self.canary)
            self.rollout.apply(self.start_from, lambda o: isvc.start_patch(o, uri, percent))
            self.start_from = None
            return
        obj, state = self.rollout.read_state()
        if not state.canary_running or state.spec_version != self.canary:
            raise RefusedError(
                f"the canary of version {self.canary} is no longer running (spec serves "
                f"{state.spec_version} at {state.isvc.canary_percent}); someone else acted"
            )
        self.rollout.apply(obj, lambda o: isvc.traffic_patch(o, percent))

    def analyze(self, window_seconds: int) -> Analysis:
        self.last_window = window_seconds
        return self.rollout.collect(self.stable, self.canary, f"{window_seconds}s")

    def promote(self) -> None:
        self.rollout.do_promote()

    def rollback(self, reason: str) -> Any:
        try:
            return self.rollout.do_rollback(reason)
        except RefusedError as e:
            logger.warning("nothing to roll back: %s", e)
            return None
