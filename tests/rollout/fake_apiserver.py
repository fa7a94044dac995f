"""A small local HTTP server that answers like the Kubernetes API server for custom objects.

No API server runs on this machine, so the tests check the exact requests the
`kubernetes` client sends (method, path, query, content type, body) against this
recorder. It behaves as the real one does where the rollout relies on it:

- merge patches as for a custom resource: RFC 7386 merge patch only (strategic merge
  is refused with 415, as for every CRD); `metadata.resourceVersion` in a patch or a
  PUT is a precondition (409 on a mismatch); spec changes bump `generation`;
- `resourceVersion` comes from one revision counter for every object (etcd's), and a
  write that changes nothing (a no-op patch) stores nothing and keeps it;
- `?dryRun=All` runs every check and answers the would-be object, storing nothing
  (the answer keeps the stored resourceVersion, as the real registry's dry run does);
- create (POST to a collection) of an existing name is 409 AlreadyExists; DELETE
  honours `preconditions.resourceVersion`; leases are stored like any object;
- `forbidden_verbs` plays RBAC: those verbs answer 403 before anything else, dry run
  or not (authorization runs before admission and storage);
- for the controller (kopf): the discovery documents of the two groups involved, a
  LIST of a collection with its resourceVersion, a WATCH that streams every change
  after a given resourceVersion as JSON lines (chunked), and the creation of core/v1
  Events with `generateName` (kept in `events`).
- KServe's status, where the rollout reads it (`revisions`): a spec change of an
  InferenceService's predictor template (all of `spec.predictor` but
  `canaryTrafficPercent`) makes Knative create a new revision, `<name>-predictor-NNNNN`
  (`status.components.predictor.latestCreatedRevision`); in mode "ready" it is Ready at
  once (`latestReadyRevision` follows), in mode "pending" it stays not Ready until the
  test calls `revision_ready` (as a revision that pulls its image and loads its model);
  None (the default) leaves the status as the test wrote it.
Its merge-patch code is written independently of the code under test.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CRD_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
)
VERBS = {"GET": "get", "PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}
COLLECTIONS = ("/leases",)
"""Paths ending so are collections one POSTs to (the InferenceServices are put by tests)."""


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    authorization: str | None
    raw_body: bytes
    body: Any
    at: float = field(default_factory=time.monotonic)


def rfc7386(target: Any, patch: Any) -> Any:
    """JSON merge patch, transcribed from the pseudo-code of RFC 7386 section 2."""
    if isinstance(patch, dict):
        if not isinstance(target, dict):
            target = {}
        result = dict(target)
        for name, value in patch.items():
            if value is None:
                result.pop(name, None)
            else:
                result[name] = rfc7386(result.get(name), value)
        return result
    return patch


def _conflict(resource: str, name: str) -> dict[str, Any]:
    return status(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
    )


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _resource(path: str) -> tuple[str, str]:
    """(group-qualified resource, name) of an object path, for messages."""
    parts = path.strip("/").split("/")
    name = parts[-1]
    resource = parts[-2] if len(parts) >= 2 else ""
    group = parts[1] if parts[0] == "apis" else ""
    return (f"{resource}.{group}" if group else resource), name


DISCOVERY: dict[str, Any] = {
    "/api": {"kind": "APIVersions", "versions": ["v1"]},
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": "events",
                "singularName": "event",
                "namespaced": True,
                "kind": "Event",
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            },
            {
                "name": "namespaces",
                "singularName": "namespace",
                "namespaced": False,
                "kind": "Namespace",
                "verbs": ["get", "list", "watch"],
            },
        ],
    },
    "/apis": {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": "serving.kserve.io",
                "versions": [{"groupVersion": "serving.kserve.io/v1beta1", "version": "v1beta1"}],
                "preferredVersion": {
                    "groupVersion": "serving.kserve.io/v1beta1",
                    "version": "v1beta1",
                },
            }
        ],
    },
    "/apis/serving.kserve.io/v1beta1": {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "serving.kserve.io/v1beta1",
        "resources": [
            {
                "name": "inferenceservices",
                "singularName": "inferenceservice",
                "namespaced": True,
                "kind": "InferenceService",
                "shortNames": ["isvc"],
                "verbs": ["delete", "get", "list", "patch", "create", "update", "watch"],
            },
            {
                "name": "inferenceservices/status",
                "singularName": "",
                "namespaced": True,
                "kind": "InferenceService",
                "verbs": ["get", "patch", "update"],
            },
        ],
    },
}

WATCH_LONGEST_SECONDS = 30.0
"""A watch ends after its timeoutSeconds or this, whichever is first (clients re-watch)."""


@dataclass
class WatchEvent:
    revision: int
    type: str
    path: str
    obj: dict[str, Any]


@dataclass
class Watch:
    """A handled watch request: the handler streams `watch_lines` instead of one body."""

    path: str
    query: dict[str, list[str]]


def _collection(path: str) -> str:
    return path.rsplit("/", 1)[0]


class FakeApiServer:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        """Notified on every write, for the watches."""
        self.history: list[WatchEvent] = []
        self.events: list[dict[str, Any]] = []
        """core/v1 Events created through the API, in order."""
        self.stopping = False
        self._event_names = itertools.count(1)
        self.revision = 1000
        """The global revision every write takes the next value of, as etcd's."""
        self.status_writes_before_next_patch = 0
        """Simulate the controller writing status between our GET and PATCH (409 each)."""
        self.edits_before_next_patch: list[dict[str, Any]] = []
        """Merge patches someone else applies between our GET and our next PATCH."""
        self.spec_edit_before_next_patch: dict[str, Any] | None = None
        """Simulate a person changing the spec between our GET and PATCH."""
        self.revisions: str | None = None
        """KServe's status stand-in: None, "ready" or "pending" (see the module's doc)."""
        self.forbidden_verbs: set[str] = set()
        """RBAC: verbs (get, patch, create, update, delete) answered 403, on everything or,
        as `"get leases"`, on one resource."""
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def put(self, path: str, obj: dict[str, Any]) -> None:
        with self.lock:
            stored = copy.deepcopy(obj)
            rv = int(stored.setdefault("metadata", {}).setdefault("resourceVersion", "0"))
            if rv == 0:
                self.revision += 1
                stored["metadata"]["resourceVersion"] = str(self.revision)
            self.revision = max(self.revision, rv)
            self._record_change("MODIFIED" if path in self.objects else "ADDED", path, stored)
            self.objects[path] = stored

    def edit(self, path: str, patch: dict[str, Any]) -> None:
        """A write by someone else (helm upgrade, KServe's status), as the API server
        applies a merge patch: next revision, generation bumped when the spec changed."""
        with self.lock:
            current = self.objects[path]
            self._store(path, current, rfc7386(copy.deepcopy(current), patch))

    def revision_ready(self, path: str) -> None:
        """KServe reports the latest created revision Ready (it now takes the traffic the
        route gives `latestRevision`)."""
        with self.lock:
            current = self.objects[path]
            component = current["status"]["components"]["predictor"]
            latest = component["latestCreatedRevision"]
            edit = {"status": {"components": {"predictor": {"latestReadyRevision": latest}}}}
            self._store(path, current, rfc7386(copy.deepcopy(current), edit))

    def _kserve_status(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """A new revision for a new predictor template (see `revisions`)."""

        def template(obj: dict[str, Any]) -> Any:
            found = dict((obj.get("spec") or {}).get("predictor") or {})
            found.pop("canaryTrafficPercent", None)
            return found

        if self.revisions is None or template(old) == template(new):
            return
        component = new.setdefault("status", {}).setdefault("components", {})
        predictor = component.setdefault("predictor", {})
        # Knative numbers a Configuration's revisions in order: the next after the latest.
        last = str(predictor.get("latestCreatedRevision") or "-00000").rsplit("-", 1)[-1]
        name = f"{new['metadata']['name']}-predictor-{int(last) + 1:05d}"
        predictor["latestCreatedRevision"] = name
        if self.revisions == "ready":
            predictor["latestReadyRevision"] = name

    def event_reasons(self) -> list[str]:
        with self.lock:
            return [str(e.get("reason")) for e in self.events]

    def _record_change(self, kind: str, path: str, obj: dict[str, Any]) -> None:
        revision = int(obj["metadata"].get("resourceVersion") or self.revision)
        self.history.append(WatchEvent(revision, kind, path, copy.deepcopy(obj)))
        self.changed.notify_all()

    def get(self, path: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.objects[path])

    def patches(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "PATCH"]

    def methods(self) -> list[str]:
        return [r.method for r in self.requests]

    def calls(self, kind: str = "inferenceservices") -> list[str]:
        """Methods of the requests to one kind of object (with `?dryRun` marked)."""
        return [
            r.method + (" dry-run" if r.query.get("dryRun") else "")
            for r in self.requests
            if f"/{kind}" in r.path
        ]

    def _store(self, path: str, old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
        """Write `new` with the next revision, unless it equals `old` (a no-op)."""
        if old is not None and new == old:
            return old
        meta = new.setdefault("metadata", {})
        if old is not None and new.get("spec") != old.get("spec"):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
            if "/inferenceservices/" in path:
                self._kserve_status(old, new)
        self.revision += 1
        meta["resourceVersion"] = str(self.revision)
        self.objects[path] = new
        self._record_change("ADDED" if old is None else "MODIFIED", path, new)
        return new

    def _others_write(self, path: str) -> None:
        """The writes of the controller and of people that race our next PATCH."""
        edits = list(self.edits_before_next_patch[:1])
        del self.edits_before_next_patch[:1]
        if self.status_writes_before_next_patch:
            self.status_writes_before_next_patch -= 1
            writes = int(self.objects[path].get("status", {}).get("fakeControllerWrites", 0))
            edits.append({"status": {"fakeControllerWrites": writes + 1}})
        if self.spec_edit_before_next_patch is not None:
            edits.append(self.spec_edit_before_next_patch)
            self.spec_edit_before_next_patch = None
        for edit in edits:
            current = self.objects[path]
            self._store(path, current, rfc7386(copy.deepcopy(current), edit))

    def handle(self, method: str, raw_path: str, headers: Any, raw: bytes) -> tuple[int, Any]:
        split = urlsplit(raw_path)
        query = parse_qs(split.query)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self.lock:
            self.requests.append(
                Recorded(
                    method,
                    split.path,
                    query,
                    headers.get("Content-Type"),
                    headers.get("Authorization"),
                    raw,
                    body,
                )
            )
            return self._answer(method, split.path, query, headers, body)

    def _answer(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: Any
    ) -> tuple[int, Any]:
        if method == "GET" and path in DISCOVERY:
            return 200, DISCOVERY[path]
        resource, name = _resource(path)
        verb = VERBS.get(method, method.lower())
        if {verb, f"{verb} {resource.split('.')[0]}"} & self.forbidden_verbs:
            return 403, status(
                403,
                "Forbidden",
                f'{resource} "{name}" is forbidden: User "system:serviceaccount:mlops:reader" '
                f'cannot {verb} resource "{resource.split(".")[0]}"',
            )
        dry_run = query.get("dryRun") == ["All"]
        if query.get("dryRun") and not dry_run:
            return 400, status(400, "BadRequest", f"invalid dry run option: {query['dryRun']}")
        if method == "POST" and path.endswith("/events"):
            return self._create_event(path, body)
        if method == "POST" and path.endswith(COLLECTIONS):
            return self._create(path, resource, body, dry_run)
        current = self.objects.get(path)
        if (
            current is None
            and method == "GET"
            and any(_collection(p) == path for p in self.objects)
        ):
            if query.get("watch", [""])[0] in {"true", "1"}:
                return 200, Watch(path, query)
            return 200, self._list(path)
        if current is None:
            return 404, status(404, "NotFound", f'{resource} "{name}" not found')
        if method == "GET":
            return 200, current
        if method == "DELETE":
            return self._delete(path, resource, name, body, dry_run)
        if method == "PUT":
            return self._replace(path, resource, name, body, dry_run)
        if method == "PATCH":
            return self._patch(path, resource, name, headers, body, dry_run)
        return 405, status(405, "MethodNotAllowed", f"{method} is not handled here")

    def _create(self, path: str, resource: str, body: Any, dry_run: bool) -> tuple[int, Any]:
        if not isinstance(body, dict) or not (body.get("metadata") or {}).get("name"):
            return 422, status(422, "Invalid", "metadata.name: Required value")
        name = body["metadata"]["name"]
        if f"{path}/{name}" in self.objects:
            return 409, status(409, "AlreadyExists", f'{resource} "{name}" already exists')
        created = copy.deepcopy(body)
        meta = created["metadata"]
        meta.pop("resourceVersion", None)
        meta.update(uid=str(uuid.uuid4()), generation=1)
        if dry_run:
            meta["resourceVersion"] = ""
            return 201, created
        return 201, self._store(f"{path}/{name}", None, created)

    def _delete(
        self, path: str, resource: str, name: str, body: Any, dry_run: bool
    ) -> tuple[int, Any]:
        current = self.objects[path]["metadata"]["resourceVersion"]
        wanted = ((body or {}).get("preconditions") or {}).get("resourceVersion")
        if wanted is not None and wanted != current:
            return 409, status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {resource} "{name}": Precondition failed: '
                f"ResourceVersion in precondition: {wanted}, in object meta: {current}",
            )
        if not dry_run:
            gone = self.objects.pop(path)
            self.revision += 1
            self._record_change("DELETED", path, {**gone, "metadata": {**gone["metadata"]}})
        return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}

    def _replace(
        self, path: str, resource: str, name: str, body: Any, dry_run: bool
    ) -> tuple[int, Any]:
        current = self.objects[path]
        if not isinstance(body, dict):
            return 400, status(400, "BadRequest", "the body is not an object")
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            return 409, _conflict(resource, name)
        replaced = copy.deepcopy(body)
        replaced["metadata"] = {
            **replaced.get("metadata", {}),
            "uid": current["metadata"].get("uid"),
            "resourceVersion": current["metadata"]["resourceVersion"],
        }
        if dry_run:
            return 200, replaced
        return 200, self._store(path, current, replaced)

    def _patch(
        self, path: str, resource: str, name: str, headers: Any, body: Any, dry_run: bool
    ) -> tuple[int, Any]:
        content_type = (headers.get("Content-Type") or "").split(";")[0]
        if content_type not in CRD_PATCH_TYPES:
            return 415, status(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types "
                "include: " + ", ".join(CRD_PATCH_TYPES),
            )
        if content_type != "application/merge-patch+json" or not isinstance(body, dict):
            return 400, status(400, "BadRequest", "this fake applies merge patches only")
        if not dry_run:
            self._others_write(path)
        current = self.objects[path]
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
            return 409, _conflict(resource, name)
        patched = rfc7386(copy.deepcopy(current), body)
        patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if dry_run:
            return 200, patched
        return 200, self._store(path, current, patched)

    def _list(self, path: str) -> dict[str, Any]:
        items = [copy.deepcopy(o) for p, o in self.objects.items() if _collection(p) == path]
        return {
            "apiVersion": "v1",
            "kind": "List",
            "metadata": {"resourceVersion": str(self.revision)},
            "items": items,
        }

    def _create_event(self, path: str, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not body.get("involvedObject") or not body.get("reason"):
            return 422, status(422, "Invalid", "an Event needs involvedObject and reason")
        event = copy.deepcopy(body)
        meta = event.setdefault("metadata", {})
        if not meta.get("name"):
            meta["name"] = f"{meta.get('generateName', 'event.')}{next(self._event_names):05d}"
        meta["namespace"] = path.split("/")[4]
        self.revision += 1
        meta["resourceVersion"] = str(self.revision)
        self.events.append(event)
        return 201, event

    def watch_lines(self, path: str, query: dict[str, list[str]]) -> Iterator[bytes]:
        """The changes of the collection after `resourceVersion`, until the timeout."""
        since = int(query.get("resourceVersion", ["0"])[0] or 0)
        timeout = float(query.get("timeoutSeconds", [WATCH_LONGEST_SECONDS])[0])
        deadline = time.monotonic() + min(timeout, WATCH_LONGEST_SECONDS)
        sent = since
        while True:
            with self.lock:
                pending = [
                    e for e in self.history if e.revision > sent and _collection(e.path) == path
                ]
                if not pending:
                    left = deadline - time.monotonic()
                    if left <= 0 or self.stopping:
                        return
                    self.changed.wait(min(left, 0.5))
                    continue
            for event in pending:
                sent = event.revision
                yield json.dumps({"type": event.type, "object": event.obj}).encode() + b"\n"

    @contextmanager
    def running(self) -> Iterator[FakeApiServer]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                code, payload = fake.handle(self.command, self.path, self.headers, raw)
                if isinstance(payload, Watch):
                    self._stream(payload)
                    return
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, watch: Watch) -> None:
                # Chunked, as the API server streams a watch: one JSON object a line.
                self.protocol_version = "HTTP/1.1"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for line in fake.watch_lines(watch.path, watch.query):
                        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away: the watch is over
                self.close_connection = True

            do_GET = do_PATCH = do_PUT = do_POST = do_DELETE = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            with self.lock:
                self.stopping = True
                self.changed.notify_all()
            self._server.shutdown()
            self._server.server_close()
            thread.join(5)


def kubeconfig_yaml(server_url: str, namespace: str, token: str) -> str:
    return f"""apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {server_url}
users:
- name: tester
  user:
    token: {token}
contexts:
- name: fake
  context:
    cluster: fake
    user: tester
    namespace: {namespace}
current-context: fake
"""


def inference_service(
    name: str,
    namespace: str,
    model_uri: str,
    canary_percent: int | None = None,
    *,
    stable_revision: str = "00001",
    latest_revision: str | None = None,
) -> dict[str, Any]:
    """An InferenceService as KServe (Knative mode) would hold it, custom predictor container."""
    predictor: dict[str, Any] = {
        "minReplicas": 1,
        "containers": [
            {
                "name": "kserve-container",
                "image": "kind.local/mlops-serving:0.1.0",
                "args": ["--http_port", "8080"],
                "env": [
                    {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"},
                    {"name": "MODEL_NAME", "value": name},
                    {"name": "MODEL_URI", "value": model_uri},
                ],
                "ports": [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
            }
        ],
    }
    if canary_percent is not None:
        predictor["canaryTrafficPercent"] = canary_percent
    stable = f"{name}-predictor-{stable_revision}"
    latest = f"{name}-predictor-{latest_revision}" if latest_revision else stable
    if latest != stable and canary_percent is not None:
        traffic = [
            {"latestRevision": True, "percent": canary_percent, "revisionName": latest},
            {
                "latestRevision": False,
                "percent": 100 - canary_percent,
                "revisionName": stable,
                "tag": "prev",
            },
        ]
    else:
        traffic = [{"latestRevision": True, "percent": 100, "revisionName": latest}]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": "1000",
            "generation": 3,
            "annotations": {"serving.kserve.io/deploymentMode": "Knative"},
        },
        "spec": {"predictor": predictor},
        "status": {
            "components": {
                "predictor": {
                    "latestCreatedRevision": latest,
                    "latestReadyRevision": latest,
                    "latestRolledoutRevision": stable,
                    "traffic": traffic,
                }
            },
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
