"""A folder of JSON objects with the API server's semantics the rollout relies on.

The local stand-in for the Kubernetes API (`make demo`, `--target local`): the rollout
CLI, its controller and the local serving process (demo/local_serving.py) are separate
processes that read and write the same objects through this module, as they would
through a kube-apiserver. What it keeps of the API server (docs/rollouts.md, "The
local cluster"):

- objects at `<folder>/<plural>/<name>.json`, Events appended to `<folder>/events.jsonl`;
- one revision counter for the whole folder (etcd's): every stored change takes the next
  value as `metadata.resourceVersion`, a string; a write that changes nothing stores
  nothing and keeps the resourceVersion, as a no-op patch does on a real API server;
- `metadata.generation` starts at 1 and grows by one only when the spec changes (all
  but metadata and status, as the CRD strategy counts it);
  `uid` and `creationTimestamp` are set on create and never change;
- optimistic concurrency: a patch carrying `metadata.resourceVersion`, a replace, a
  delete or a status update with a precondition fails with Conflict when the stored
  object moved on;
- `status` is a subresource: written only through `update_status`; a create or a
  replace keeps the stored status (none on create), a merge patch touching it is refused;
- `dry_run=True` runs every check and answers the would-be object, storing nothing.

Every operation holds an exclusive `fcntl.flock` on `<folder>/.lock` (read, check and
write are one step, across processes), and every file is written to a temporary file
and renamed over the old one (a reader never sees half an object).
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contract.merge_patch import merge_patch

Json = dict[str, Any]

INFERENCE_SERVICES = "inferenceservices"
LEASES = "leases"
EVENTS_FILE = "events.jsonl"
LOCK_FILE = ".lock"
REVISION_FILE = ".revision"
DEFAULT_NAMESPACE = "default"

# A DNS-1123 subdomain, as Kubernetes requires of object names; it also keeps every
# name a plain file name inside its folder (no "..", no "/").
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_PLURAL = re.compile(r"^[a-z][a-z0-9]{0,62}$")
# Set by the server; a write that names other values for them is refused.
_SERVER_FIELDS = ("uid", "creationTimestamp", "generation")


class LocalClusterError(Exception):
    """Base of every error of the local cluster."""


class NotFound(LocalClusterError):
    """No such object (HTTP 404 on a real API server)."""


class AlreadyExists(LocalClusterError):
    """create() of a name that exists (HTTP 409, reason AlreadyExists)."""


class Conflict(LocalClusterError):
    """The stored object's resourceVersion is not the one the write was based on (409)."""


class Invalid(LocalClusterError):
    """The write itself is malformed (HTTP 422 / 400): nothing was stored."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LocalCluster:
    """The objects under `folder` (created on the first write)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"LocalCluster({str(self.folder)!r})"

    # --- reading ----------------------------------------------------------------------

    def get(self, plural: str, name: str) -> Json:
        path = self._path(plural, name)
        with self._locked(write=False):
            return self._read(plural, name, path)

    def list_objects(self, plural: str) -> list[Json]:
        """Every stored object of `plural`, by name."""
        self._check_plural(plural)
        with self._locked(write=False):
            folder = self.folder / plural
            if not folder.is_dir():
                return []
            return [
                self._read(plural, p.stem, p)
                for p in sorted(folder.glob("*.json"))
                if _NAME.match(p.stem)
            ]

    def revision(self) -> int:
        """The folder's revision counter: the resourceVersion of its latest change."""
        with self._locked(write=False):
            return self._revision()

    # --- writing ----------------------------------------------------------------------

    def create(self, plural: str, obj: Json, dry_run: bool = False) -> Json:
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata") or {}, dict):
            raise Invalid(f"create {plural}: the object must be a JSON object with metadata")
        metadata = obj.get("metadata") or {}
        name = metadata.get("name")
        if not isinstance(name, str):
            raise Invalid(f"create {plural}: the object needs metadata.name (a string)")
        path = self._path(plural, name)
        if metadata.get("resourceVersion"):
            raise Invalid(
                f"create {plural}/{name}: metadata.resourceVersion must not be set on an "
                "object to be created (the server assigns it); remove it"
            )
        with self._locked(write=not dry_run):
            if path.exists():
                raise AlreadyExists(
                    f"{plural}/{name} already exists in {self.folder}; patch or replace "
                    "it, or delete it first"
                )
            new = copy.deepcopy(obj)
            new.pop("status", None)  # the status subresource: written by update_status
            new_metadata = _metadata(new)
            for field in _SERVER_FIELDS:
                new_metadata.pop(field, None)
            new_metadata.setdefault("namespace", DEFAULT_NAMESPACE)
            new_metadata["uid"] = str(uuid.uuid4())
            new_metadata["creationTimestamp"] = _now()
            new_metadata["generation"] = 1
            return self._store(plural, name, path, new, dry_run)

    def merge_patch(self, plural: str, name: str, patch: Json, dry_run: bool = False) -> Json:
        """Apply an RFC 7386 merge patch; `metadata.resourceVersion` in it is a precondition."""
        if not isinstance(patch, dict):
            raise Invalid(f"merge patch of {plural}/{name}: the body must be a JSON object")
        if "status" in patch:
            raise Invalid(
                f"merge patch of {plural}/{name} touches status: status is the status "
                "subresource, write it with update_status"
            )
        path = self._path(plural, name)
        with self._locked(write=not dry_run):
            stored = self._read(plural, name, path)
            patch_metadata = patch.get("metadata")
            wanted = (
                patch_metadata.get("resourceVersion") if isinstance(patch_metadata, dict) else None
            )
            if wanted is not None:
                self._precondition(plural, name, stored, str(wanted))
            body = copy.deepcopy(patch)
            if isinstance(body.get("metadata"), dict):
                body["metadata"].pop("resourceVersion", None)
            new = merge_patch(stored, body)
            return self._update(plural, name, path, stored, new, dry_run)

    def replace(self, plural: str, name: str, obj: Json, dry_run: bool = False) -> Json:
        """Store `obj` whole (PUT): it must carry the stored metadata.resourceVersion."""
        path = self._path(plural, name)
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata") or {}, dict):
            raise Invalid(f"replace {plural}/{name}: the object must be a JSON object")
        wanted = (obj.get("metadata") or {}).get("resourceVersion")
        if not wanted:
            raise Invalid(
                f"replace {plural}/{name}: the object needs metadata.resourceVersion (get the "
                "object, change it, send it back)"
            )
        with self._locked(write=not dry_run):
            stored = self._read(plural, name, path)
            self._precondition(plural, name, stored, str(wanted))
            new = copy.deepcopy(obj)
            new.pop("status", None)
            if "status" in stored:
                new["status"] = copy.deepcopy(stored["status"])
            return self._update(plural, name, path, stored, new, dry_run)

    def update_status(
        self, plural: str, name: str, status: Json, resource_version: str | None = None
    ) -> Json:
        """Write `status` whole (the status subresource): generation does not change."""
        if not isinstance(status, dict):
            raise Invalid(f"status of {plural}/{name} must be a JSON object")
        path = self._path(plural, name)
        with self._locked(write=True):
            stored = self._read(plural, name, path)
            if resource_version is not None:
                self._precondition(plural, name, stored, resource_version)
            new = copy.deepcopy(stored)
            new["status"] = copy.deepcopy(status)
            return self._update(plural, name, path, stored, new, dry_run=False)

    def delete(self, plural: str, name: str, resource_version: str | None = None) -> None:
        path = self._path(plural, name)
        with self._locked(write=True):
            stored = self._read(plural, name, path)
            if resource_version is not None:
                self._precondition(plural, name, stored, resource_version)
            self._next_revision()  # a deletion is a change, as in etcd
            path.unlink()

    # --- events -----------------------------------------------------------------------

    def post_event(self, event: Json) -> None:
        """Append an Event (core/v1 shape) to events.jsonl, named and versioned."""
        if not isinstance(event, dict):
            raise Invalid("an Event must be a JSON object")
        with self._locked(write=True):
            new = copy.deepcopy(event)
            metadata = _metadata(new)
            revision = self._next_revision()
            if not metadata.get("name"):
                # What the API server does with generateName: a unique suffix.
                metadata["name"] = (
                    f"{metadata.pop('generateName', 'event.')}{uuid.uuid4().hex[:10]}"
                )
            metadata.setdefault("namespace", DEFAULT_NAMESPACE)
            metadata["uid"] = str(uuid.uuid4())
            metadata["creationTimestamp"] = _now()
            metadata["resourceVersion"] = str(revision)
            line = (json.dumps(new, sort_keys=True) + "\n").encode()
            fd = os.open(self.folder / EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)  # one write under the lock: one whole line
            finally:
                os.close(fd)

    def events(self) -> list[Json]:
        """Every Event, oldest first."""
        with self._locked(write=False):
            path = self.folder / EVENTS_FILE
            if not path.is_file():
                return []
            found: list[Json] = []
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    found.append(json.loads(line))
                except ValueError as e:
                    raise LocalClusterError(
                        f"{path}:{number} is not a JSON object ({e}); remove that line"
                    ) from e
            return found

    # --- internals --------------------------------------------------------------------

    @contextmanager
    def _locked(self, *, write: bool) -> Iterator[None]:
        """The folder's exclusive lock; a read of a folder that is not there takes none."""
        if not self.folder.is_dir():
            if not write:
                yield
                return
            self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _check_plural(self, plural: str) -> None:
        if not _PLURAL.match(plural):
            raise Invalid(f"{plural!r} is not a resource plural (lower-case letters, e.g. leases)")

    def _path(self, plural: str, name: str) -> Path:
        self._check_plural(plural)
        if not isinstance(name, str) or not _NAME.match(name):
            raise Invalid(
                f"{name!r} is not a valid object name: lower-case letters, digits, '-' and "
                "'.', starting and ending with a letter or digit (a DNS-1123 subdomain)"
            )
        return self.folder / plural / f"{name}.json"

    def _read(self, plural: str, name: str, path: Path) -> Json:
        try:
            text = path.read_text()
        except FileNotFoundError as e:
            raise NotFound(
                f"{plural}/{name} not found in {self.folder} (no {path}); create it first"
            ) from e
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise LocalClusterError(f"{path} is not valid JSON ({e}); fix or delete it") from e
        if not isinstance(obj, dict):
            raise LocalClusterError(f"{path} holds {type(obj).__name__}, not a JSON object")
        return obj

    def _precondition(self, plural: str, name: str, stored: Json, wanted: str) -> None:
        current = str(_metadata(stored).get("resourceVersion", ""))
        if wanted != current:
            raise Conflict(
                f"{plural}/{name} changed since it was read: resourceVersion {wanted} was "
                f"asked for, the stored object is at {current}; read it again and retry"
            )

    def _update(
        self, plural: str, name: str, path: Path, stored: Json, new: Json, dry_run: bool
    ) -> Json:
        old_metadata = _metadata(stored)
        new_metadata = _metadata(new)
        if new_metadata.get("name", name) != name:
            raise Invalid(
                f"{plural}/{name}: metadata.name cannot change (to {new_metadata.get('name')!r});"
                " create an object under the new name instead"
            )
        for field in _SERVER_FIELDS:
            given = new_metadata.get(field)
            if given is not None and given != old_metadata.get(field):
                raise Invalid(
                    f"{plural}/{name}: metadata.{field} is set by the server and cannot be "
                    f"changed (stored {old_metadata.get(field)!r}, sent {given!r}); leave it out"
                )
        for field in ("name", "namespace", *_SERVER_FIELDS, "resourceVersion"):
            if field in old_metadata:
                new_metadata[field] = old_metadata[field]
        if new == stored:
            return stored  # a no-op: nothing stored, same resourceVersion (as the API server)
        if _generation_content(new) != _generation_content(stored):
            new_metadata["generation"] = int(old_metadata.get("generation") or 0) + 1
        return self._store(plural, name, path, new, dry_run)

    def _store(self, plural: str, name: str, path: Path, new: Json, dry_run: bool) -> Json:
        if dry_run:
            # What would be stored; the resourceVersion stays the stored one (a dry run
            # takes no revision), or none on a dry-run create.
            return new
        _metadata(new)["resourceVersion"] = str(self._next_revision())
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, json.dumps(new, indent=2, sort_keys=True) + "\n")
        return copy.deepcopy(new)

    def _revision(self) -> int:
        try:
            return int((self.folder / REVISION_FILE).read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError as e:
            raise LocalClusterError(
                f"{self.folder / REVISION_FILE} is not a number ({e}); it holds the folder's "
                "revision counter: set it to at least the largest resourceVersion stored"
            ) from e

    def _next_revision(self) -> int:
        # Written before the object: a crash between the two leaves a gap in the
        # counter (harmless), never two changes with one resourceVersion.
        revision = self._revision() + 1
        _atomic_write(self.folder / REVISION_FILE, f"{revision}\n")
        return revision


def _generation_content(obj: Json) -> Json:
    """What counts for metadata.generation: all but metadata and status, i.e. the spec
    (apiextensions-apiserver's customResourceStrategy.PrepareForUpdate)."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _metadata(obj: Json) -> Json:
    metadata = obj.get("metadata")
    if metadata is None:
        metadata = obj["metadata"] = {}
    if not isinstance(metadata, dict):
        raise Invalid("metadata must be a JSON object")
    return metadata


def _atomic_write(path: Path, text: str) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
