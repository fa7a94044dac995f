"""A small local HTTP server that answers like the Kubernetes API server for custom objects.

No API server runs on this machine, so the tests check the exact requests the
`kubernetes` client sends (method, path, query, content type, body) against this
recorder. It applies merge patches the way the API server does for a custom
resource: RFC 7386 merge patch only (strategic merge is refused with 415, as for
every CRD), `metadata.resourceVersion` in a patch is a precondition (409 on a
mismatch), every write bumps `resourceVersion`, spec changes bump `generation`.
Its merge-patch code is written independently of the code under test.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CRD_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    authorization: str | None
    raw_body: bytes
    body: Any


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


class FakeApiServer:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self.status_writes_before_next_patch = 0
        """Simulate the controller writing status between our GET and PATCH (409 once)."""
        self.spec_edit_before_next_patch: dict[str, Any] | None = None
        """Simulate a person changing the spec between our GET and PATCH."""
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def put(self, path: str, obj: dict[str, Any]) -> None:
        with self.lock:
            self.objects[path] = copy.deepcopy(obj)

    def get(self, path: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.objects[path])

    def patches(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "PATCH"]

    def methods(self) -> list[str]:
        return [r.method for r in self.requests]

    def handle(self, method: str, raw_path: str, headers: Any, raw: bytes) -> tuple[int, Any]:
        split = urlsplit(raw_path)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self.lock:
            self.requests.append(
                Recorded(
                    method,
                    split.path,
                    parse_qs(split.query),
                    headers.get("Content-Type"),
                    headers.get("Authorization"),
                    raw,
                    body,
                )
            )
            current = self.objects.get(split.path)
            if current is None:
                name = split.path.rsplit("/", 1)[-1]
                return 404, status(404, "NotFound", f'inferenceservices "{name}" not found')
            if method == "GET":
                return 200, current
            if method != "PATCH":
                return 405, status(405, "MethodNotAllowed", f"{method} is not handled here")
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
            if self.status_writes_before_next_patch:
                self.status_writes_before_next_patch -= 1
                meta = current["metadata"]
                meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
            if self.spec_edit_before_next_patch is not None:
                current = rfc7386(current, self.spec_edit_before_next_patch)
                self.spec_edit_before_next_patch = None
                meta = current["metadata"]
                meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
                meta["generation"] = int(meta.get("generation", 1)) + 1
                self.objects[split.path] = current
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                return 409, status(
                    409,
                    "Conflict",
                    "Operation cannot be fulfilled on inferenceservices.serving.kserve.io: the "
                    "object has been modified; please apply your changes to the latest version "
                    "and try again",
                )
            patched = rfc7386(current, body)
            meta = patched["metadata"]
            meta["resourceVersion"] = str(int(current["metadata"]["resourceVersion"]) + 1)
            if patched.get("spec") != current.get("spec"):
                meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
            self.objects[split.path] = patched
            return 200, patched

    @contextmanager
    def running(self) -> Iterator[FakeApiServer]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                code, payload = fake.handle(self.command, self.path, self.headers, raw)
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_PUT = do_POST = do_DELETE = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
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
