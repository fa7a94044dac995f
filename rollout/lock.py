"""One `auto` at a time per InferenceService: a Kubernetes Lease as the lock.

Why a Lease and not an annotation on the InferenceService: KServe copies the
InferenceService's annotations into the Knative revision template (all but a short
disallowed list, `serviceAnnotationDisallowedList`), so writing a lock annotation
would make Knative cut a new revision, and releasing it another one, in the middle
of a canary. A `coordination.k8s.io/v1` Lease is the object Kubernetes itself locks
with (leader election, node heartbeats), and the API server arbitrates it:

- taking it is a create: of two `auto` runs, the API server lets exactly one create
  `<isvc>-rollout`; the other gets 409 AlreadyExists and refuses (exit 2);
- the holder renews `spec.renewTime` while it runs; every write carries the
  `resourceVersion` it read, so a renewal after someone else's takeover is a 409;
- a lease not renewed for `leaseDurationSeconds` belongs to a run that died
  (SIGKILL, a lost node): the next `auto` takes it over, again through a
  resourceVersion precondition, so two contenders cannot both win;
- releasing it is a delete with the same precondition.

Expiry compares the lease's `renewTime` with this machine's clock, so the clocks of
the machines running `auto` must agree to well within the lease duration (180 s).

Where the lease is stored is a `LeaseStore`: `KubeLeases` (the API server, through
CoordinationV1Api) or, with `--target local`, the local cluster's `leases`
(rollout/local.py). The logic above is the same on both: each store answers the
lease as JSON, or NOT_FOUND / CONFLICT where the API server answers 404 / 409.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from rollout.errors import LockLostError, RefusedError, UnreachableError

logger = logging.getLogger(__name__)

LEASE_SECONDS = 180
"""How long a lease outlives its last renewal; longer than any one wait or API call."""
RENEW_EVERY_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 30
LEASE_SUFFIX = "-rollout"
VERSION_ANNOTATION = "mlops-rollout/version"


def lease_name(isvc_name: str) -> str:
    return f"{isvc_name}{LEASE_SUFFIX}"


def micro_time(at: float) -> str:
    """RFC 3339 with microseconds, the wire form of a Lease's MicroTime fields."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _timestamp(value: Any) -> float | None:
    """A MicroTime as the stores answer it (RFC 3339 text), as Unix time; None if absent."""
    if isinstance(value, str) and value:
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return None


NOT_FOUND = 404
CONFLICT = 409
"""What a store answers instead of the lease where the API server answers 404 / 409
(409 also for AlreadyExists on create); every other failure is an UnreachableError."""

Lease = dict[str, Any]


class LeaseStore(Protocol):
    """The leases of one namespace, with the API server's answers (lease JSON or 404/409)."""

    namespace: str

    def read(self, name: str) -> Lease | int: ...

    def create(self, body: Lease, *, dry_run: bool) -> Lease | int: ...

    def replace(self, name: str, body: Lease, *, dry_run: bool) -> Lease | int:
        """PUT: the body carries the resourceVersion it was based on (else CONFLICT)."""
        ...

    def delete(self, name: str, resource_version: str) -> Lease | int:
        """Delete with a resourceVersion precondition (CONFLICT when it moved)."""
        ...


class KubeLeases:
    """`coordination.k8s.io/v1` Leases through the `kubernetes` client."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self._api = client.CoordinationV1Api(api_client)
        self._serialize = api_client.sanitize_for_serialization
        self.namespace = namespace

    def read(self, name: str) -> Lease | int:
        return self._call("read", name, self._api.read_namespaced_lease, name, self.namespace)

    def create(self, body: Lease, *, dry_run: bool) -> Lease | int:
        return self._call(
            "create",
            str(body["metadata"]["name"]),
            self._api.create_namespaced_lease,
            self.namespace,
            body,
            dry_run="All" if dry_run else None,
        )

    def replace(self, name: str, body: Lease, *, dry_run: bool) -> Lease | int:
        return self._call(
            "replace",
            name,
            self._api.replace_namespaced_lease,
            name,
            self.namespace,
            body,
            dry_run="All" if dry_run else None,
        )

    def delete(self, name: str, resource_version: str) -> Lease | int:
        return self._call(
            "release",
            name,
            self._api.delete_namespaced_lease,
            name,
            self.namespace,
            body={"preconditions": {"resourceVersion": resource_version}},
        )

    def _call(self, what: str, name: str, fn: Any, *args: Any, **kwargs: Any) -> Lease | int:
        """The API call's answer as JSON; the status for 404 / 409, raises otherwise."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        described = f"Lease {self.namespace}/{name}"
        try:
            answer = fn(*args, _request_timeout=REQUEST_TIMEOUT_SECONDS, **kwargs)
        except ApiException as e:
            if e.status in (NOT_FOUND, CONFLICT):
                return int(e.status)
            hint = (
                "; the tool needs get, create, update and delete on leases "
                "(coordination.k8s.io) in this namespace: docs/rollouts.md, 'Permissions'"
                if e.status == 403
                else ""
            )
            raise UnreachableError(
                f"could not {what} {described}: HTTP {e.status} {e.reason}{hint}"
            ) from e
        except HTTPError as e:
            raise UnreachableError(
                f"the Kubernetes API server is unreachable while trying to {what} {described}: {e}"
            ) from e
        serialized = self._serialize(answer)
        return serialized if isinstance(serialized, dict) else {}


def new_holder_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Holder:
    identity: str
    version: str | None
    acquired: float | None
    renewed: float | None
    duration: int
    annotations: dict[str, str] | None = None


class RolloutLock:
    """The lease `<isvc>-rollout` in the InferenceService's namespace."""

    def __init__(
        self,
        store: LeaseStore,
        isvc_name: str,
        *,
        identity: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.namespace = store.namespace
        self.name = lease_name(isvc_name)
        self.identity = identity or new_holder_identity()
        self._clock = clock
        self._resource_version: str | None = None
        self._acquired_at = 0.0
        self._renewed_at = 0.0
        self.annotations: dict[str, str] = {}
        """More annotations every write of the lease carries (the controller's record)."""

    def describe(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    @property
    def held(self) -> bool:
        return self._resource_version is not None

    # -- the calls ------------------------------------------------------------------------

    def _body(self, version: str, acquired: float, resource_version: str | None) -> Any:
        now = self._clock()
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "annotations": {**self.annotations, VERSION_ANNOTATION: version},
        }
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": LEASE_SECONDS,
                "acquireTime": micro_time(acquired),
                "renewTime": micro_time(now),
            },
        }

    def read(self) -> tuple[Holder, str] | None:
        """The current holder and the lease's resourceVersion; None when there is no lease."""
        found = self._store.read(self.name)
        if found == NOT_FOUND:
            return None
        if isinstance(found, int):
            raise UnreachableError(f"could not read {self.describe()}: HTTP {found}")
        spec = found.get("spec") or {}
        metadata = found.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        holder = Holder(
            identity=str(spec.get("holderIdentity") or ""),
            version=annotations.get(VERSION_ANNOTATION),
            acquired=_timestamp(spec.get("acquireTime")),
            renewed=_timestamp(spec.get("renewTime")) or _timestamp(spec.get("acquireTime")),
            duration=int(spec.get("leaseDurationSeconds") or LEASE_SECONDS),
            annotations={str(k): str(v) for k, v in annotations.items()},
        )
        return holder, str(metadata.get("resourceVersion"))

    def _expired(self, holder: Holder) -> bool:
        return not holder.identity or (
            holder.renewed is not None and self._clock() > holder.renewed + holder.duration
        )

    def _refuse(self, holder: Holder) -> RefusedError:
        now = self._clock()
        since = f", since {micro_time(holder.acquired)[:19]}Z" if holder.acquired else ""
        renewed = f", renewed {now - holder.renewed:.0f}s ago" if holder.renewed else ""
        version = f" of version {holder.version}" if holder.version else ""
        return RefusedError(
            f"another `auto`{version} holds {self.describe()} ({holder.identity}{since}"
            f"{renewed}): one rollout at a time per InferenceService; wait for it to end, or "
            f"if it died, the lease expires {holder.duration}s after its last renewal"
        )

    def acquire(self, version: str, *, dry_run: bool = False, retry: bool = True) -> None:
        """Take the lease, or take over an expired one; RefusedError while another holds it.

        With `dry_run` the create goes to the server as a dry run (`dryRun=All`), so a
        missing permission shows now, and nothing is stored."""
        now = self._clock()
        created = self._store.create(self._body(version, now, None), dry_run=dry_run)
        if not isinstance(created, int):
            if not dry_run:
                self._resource_version = _resource_version(created)
                self._acquired_at = self._renewed_at = now
                logger.info("took %s as %s", self.describe(), self.identity)
            return
        if created != CONFLICT:
            raise UnreachableError(f"could not create {self.describe()}: HTTP {created}")
        current = self.read()
        if current is None and retry:  # released between our create and our read
            self.acquire(version, dry_run=dry_run, retry=False)
            return
        if current is None:
            raise RefusedError(f"{self.describe()} keeps changing hands; run auto again")
        holder, resource_version = current
        if not self._expired(holder):
            raise self._refuse(holder)
        logger.warning(
            "%s of %s expired %s; taking it over",
            self.describe(),
            holder.identity,
            f"{now - (holder.renewed or now) - holder.duration:.0f}s ago",
        )
        replaced = self._store.replace(
            self.name, self._body(version, now, resource_version), dry_run=dry_run
        )
        if isinstance(replaced, int):  # 409: another contender took it first
            again = self.read()
            raise (
                self._refuse(again[0])
                if again
                else RefusedError(
                    f"{self.describe()} changed hands while we took it over; run auto again"
                )
            )
        if not dry_run:
            self._resource_version = _resource_version(replaced)
            self._acquired_at = self._renewed_at = now

    def adopt(self) -> Holder | None:
        """Hold the lease again if it carries our identity (this holder restarted: the
        controller's identity is fixed, the CLI's is new on every run); its holder or None."""
        current = self.read()
        if current is None:
            return None
        holder, resource_version = current
        if holder.identity == self.identity:
            self._resource_version = resource_version
            self._acquired_at = holder.acquired or self._clock()
            self._renewed_at = holder.renewed or self._acquired_at
            logger.info("holding %s again as %s", self.describe(), self.identity)
        return holder

    def forget(self) -> None:
        """Stop holding the lease without touching it (its record could not be read)."""
        self._resource_version = None

    def renew_now(self, version: str) -> None:
        """Write the lease now (a renewal carrying the current annotations); a failure
        is an error at once, the lease's last renewal stays as it was."""
        last, self._renewed_at = self._renewed_at, float("-inf")
        try:
            self.renew_if_due(version)
        except UnreachableError:
            self._renewed_at = last
            raise

    def renew_if_due(self, version: str) -> None:
        """Renew when RENEW_EVERY_SECONDS passed. A failed renewal is retried at the next
        call until the lease would have expired; then it is an error (roll back). A lease
        someone else holds now is LockLostError."""
        now = self._clock()
        if self._resource_version is None or now - self._renewed_at < RENEW_EVERY_SECONDS:
            return
        try:
            replaced = self._store.replace(
                self.name,
                self._body(version, self._acquired_at, self._resource_version),
                dry_run=False,
            )
            if isinstance(replaced, int):  # 404 / 409: gone or changed; whose is it now?
                current = self.read()
                holder = current[0].identity if current else None
                if holder != self.identity:
                    self._resource_version = None
                    raise LockLostError(
                        f"{self.describe()} is now held by {holder or 'nobody'}: another run "
                        "took the rollout over; stopping without touching the InferenceService"
                    )
                assert current is not None
                self._resource_version = current[1]
                self._renewed_at = now - RENEW_EVERY_SECONDS  # due again: renew on this one
                self.renew_if_due(version)
                return
            self._resource_version = _resource_version(replaced)
            self._renewed_at = now
        except LockLostError:
            raise
        except UnreachableError as e:
            if now - self._renewed_at < LEASE_SECONDS - RENEW_EVERY_SECONDS:
                logger.warning("could not renew %s (%s); trying again", self.describe(), e)
                return
            raise UnreachableError(
                f"could not renew {self.describe()} for {now - self._renewed_at:.0f}s: {e}"
            ) from e

    def release(self) -> None:
        """Delete the lease if it is still ours (resourceVersion precondition)."""
        if self._resource_version is None:
            return
        resource_version, self._resource_version = self._resource_version, None
        try:
            deleted = self._store.delete(self.name, resource_version)
        except UnreachableError as e:
            logger.warning("%s; it expires on its own %ss after its last renewal", e, LEASE_SECONDS)
            return
        if deleted == CONFLICT:
            logger.warning("%s changed hands before we released it; left as it is", self.describe())
        elif not isinstance(deleted, int):
            logger.info("released %s", self.describe())


def _resource_version(lease: Lease) -> str:
    return str((lease.get("metadata") or {}).get("resourceVersion"))
