"""The local stand-in for KServe + Knative: `python -m demo.local_serving --dir .demo/cluster`.

It polls the InferenceService stored in the local cluster (contract/local_cluster.py) and
does what KServe does in Knative mode (demo/local_traffic.py cites the sources):

- each new predictor template (`spec.predictor` without `canaryTrafficPercent`) is a new
  revision, `<isvc>-predictor-0000N`, stored as a Knative-like Revision object in the
  cluster folder (`revisions/`) and run as a predictor process (`python -m serving`) on
  one of two port slots: a new revision takes the slot the rolled-out one does not use;
- the traffic split and `status.components.predictor` follow KServe's rules; a revision
  that takes no traffic and is not the latest has its process stopped (Knative scales a
  revision no route references to zero);
- a restored spec serving the version a running process already serves (the rollback's
  `restore` patch) reuses that process, as Knative would route to an equal revision;
- `status` is written like KServe's (conditions Ready, PredictorReady,
  PredictorConfigurationReady, PredictorRouteReady), through the status subresource, and
  only when it changes (no timestamps that move on every poll);
- a revision whose process exits, or is not ready within the progress deadline, is
  `Ready False` with reason RevisionFailed and a message naming its log, as Knative
  reports a revision whose pod fails.

The InferenceService's URL is served by demo/local_router.py on one HTTP port (and a gRPC
relay), split by this status's traffic.

Its predictor processes stay in this process's session, so the demo's Supervisor (which
stops a service's whole session) stops them with it; on SIGTERM it stops them itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from contract.local_cluster import LocalCluster, LocalClusterError, NotFound
from demo import local_traffic
from demo.local_router import Backend, RouteTable, build_app, serve_grpc_relay
from demo.local_traffic import Component, Json, Target
from demo.processes import http_ok, log_tail
from demo.settings import REPO_ROOT

logger = logging.getLogger("local_serving")

ISVCS = "inferenceservices"
REVISIONS = "revisions"
MODEL_URI = "MODEL_URI"
MODEL_NAME = "MODEL_NAME"
CONFIGURATION_LABEL = "serving.knative.dev/configuration"
CHART_MANIFEST = REPO_ROOT / "manifests" / "inferenceservice.yaml"
CONTAINER_ONLY_ENV = frozenset({"HOME"})
"""Set for the container's read-only file system; a local process keeps the user's."""
RESTART_BACKOFF = 5.0
"""Seconds before a process that was ready and died is started again (a kubelet restart)."""


@dataclass(frozen=True)
class Slot:
    http: int
    grpc: int

    @classmethod
    def parse(cls, text: str) -> Slot:
        try:
            http, grpc = (int(p) for p in text.split(":"))
        except ValueError as e:
            raise argparse.ArgumentTypeError(
                f"a slot is HTTP_PORT:GRPC_PORT (e.g. 8082:8083), got {text!r}"
            ) from e
        return cls(http, grpc)


def _env_value(spec: Json, name: str) -> str | None:
    containers = spec.get("containers") or [{}]
    for entry in containers[0].get("env") or []:
        if isinstance(entry, dict) and entry.get("name") == name and "value" in entry:
            return str(entry["value"])
    return None


def _without_model_uri(spec: Json) -> str:
    """The template with MODEL_URI blanked: two revisions equal but for how they name
    the model serve the same thing when both names resolve to one version."""
    copy = json.loads(json.dumps(spec))
    for container in copy.get("containers") or []:
        for entry in container.get("env") or []:
            if isinstance(entry, dict) and entry.get("name") == MODEL_URI:
                entry["value"] = ""
    return local_traffic.template_key(copy)


def chart_inference_service(
    name: str, model_uri: str, tracking_uri: str, namespace: str = "demo"
) -> Json:
    """The chart's InferenceService (manifests/inferenceservice.yaml, rendered from its
    template) for a local run: this name, model URI and MLflow server."""
    import yaml

    obj: Json = yaml.safe_load(CHART_MANIFEST.read_text())
    obj["metadata"]["name"] = name
    obj["metadata"]["namespace"] = namespace
    values = {MODEL_URI: model_uri, MODEL_NAME: name, "MLFLOW_TRACKING_URI": tracking_uri}
    for entry in obj["spec"]["predictor"]["containers"][0]["env"]:
        if entry.get("name") in values:
            entry["value"] = values[entry["name"]]
    return obj


@dataclass(eq=False)
class Predictor:
    """One predictor process, serving one or more equal revisions."""

    popen: subprocess.Popen[bytes]
    slot: Slot
    template: Json
    log: Path
    started: float
    ready: bool = False
    ever_ready: bool = False
    served_uri: str | None = None
    """`models:/<name>/<version>` from the predictor's own metadata, once ready."""
    exited_at: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.slot.http}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def serves(self, spec: Json) -> bool:
        if local_traffic.template_key(spec) == local_traffic.template_key(self.template):
            return True
        uri = _env_value(spec, MODEL_URI)
        return (
            self.served_uri is not None
            and uri == self.served_uri
            and _without_model_uri(spec) == _without_model_uri(self.template)
        )

    def stop(self, timeout: float = 10) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        else:
            self.popen.wait(1)


@dataclass
class RevisionState:
    name: str
    number: int
    template: Json
    failed: str = ""
    """Why it failed (exit, deadline); "" while it may still turn ready."""
    ever_ready: bool = False


@dataclass
class LocalServing:
    """The reconciler: one `tick()` reads the InferenceService, moves processes, writes
    status and the route table."""

    cluster: LocalCluster
    name: str
    slots: tuple[Slot, Slot]
    log_dir: Path
    url: str
    table: RouteTable = field(default_factory=RouteTable)
    python: str = sys.executable
    cwd: Path = REPO_ROOT
    progress_deadline: float = 180.0
    revisions: dict[str, RevisionState] = field(default_factory=dict)
    processes: dict[str, Predictor] = field(default_factory=dict)
    """Revision name -> the process serving it (shared by equal revisions)."""

    @property
    def configuration(self) -> str:
        return f"{self.name}-predictor"

    def revision_name(self, number: int) -> str:
        return f"{self.configuration}-{number:05d}"

    # -- revisions -----------------------------------------------------------------------

    def load_revisions(self) -> None:
        """The revisions stored before (this process restarted): their templates."""
        prefix = f"{self.configuration}-"
        for obj in self.cluster.list_objects(REVISIONS):
            name = str(obj["metadata"]["name"])
            labels = obj["metadata"].get("labels") or {}
            if labels.get(CONFIGURATION_LABEL) != self.configuration or not name.startswith(prefix):
                continue
            conditions = (obj.get("status") or {}).get("conditions") or []
            ready: Json = next((c for c in conditions if c.get("type") == "Ready"), {})
            self.revisions[name] = RevisionState(
                name=name,
                number=int(name.removeprefix(prefix)),
                template=obj.get("spec") or {},
                failed=str(ready.get("message", "")) if ready.get("status") == "False" else "",
                ever_ready=ready.get("status") == "True",
            )

    def latest_created(self) -> RevisionState | None:
        return max(self.revisions.values(), key=lambda r: r.number, default=None)

    def ensure_revision(self, obj: Json) -> RevisionState:
        spec = local_traffic.template(obj)
        latest = self.latest_created()
        if latest is not None and local_traffic.template_key(
            latest.template
        ) == local_traffic.template_key(spec):
            return latest
        number = (latest.number if latest else 0) + 1
        revision = RevisionState(self.revision_name(number), number, spec)
        self.cluster.create(
            REVISIONS,
            {
                "apiVersion": "serving.knative.dev/v1",
                "kind": "Revision",
                "metadata": {
                    "name": revision.name,
                    "labels": {CONFIGURATION_LABEL: self.configuration},
                    "annotations": {
                        "serving.knative.dev/configurationGeneration": str(number),
                    },
                },
                "spec": spec,
            },
        )
        self.revisions[revision.name] = revision
        logger.info("revision %s created (%s)", revision.name, _env_value(spec, MODEL_URI))
        return revision

    def mark_revision(self, revision: RevisionState, ready: bool, message: str = "") -> None:
        condition: Json = {"type": "Ready", "status": "True" if ready else "False"}
        if not ready:
            condition.update(reason="RevisionFailed", message=message)
        try:
            self.cluster.update_status(REVISIONS, revision.name, {"conditions": [condition]})
        except LocalClusterError as e:
            logger.warning("could not write the status of %s: %s", revision.name, e)

    # -- processes -----------------------------------------------------------------------

    def start_process(self, revision: RevisionState, slot: Slot) -> Predictor:
        spec = revision.template
        uri = _env_value(spec, MODEL_URI)
        if not uri:
            raise ValueError(f"{revision.name}: the first container has no {MODEL_URI} value")
        env = dict(os.environ)
        for container in (spec.get("containers") or [])[:1]:
            for entry in container.get("env") or []:
                if (
                    isinstance(entry, dict)
                    and "value" in entry
                    and entry.get("name") not in CONTAINER_ONLY_ENV
                ):
                    env[str(entry["name"])] = str(entry["value"])
        env.setdefault("LOAD_RETRY_MAX_SECONDS", "2")
        logger_spec = spec.get("logger") or {}
        if logger_spec.get("url"):
            # KServe's agent would post the payloads; here the predictor does it itself.
            env["LOGGER_URL"] = str(logger_spec["url"])
            env["LOGGER_MODE"] = str(logger_spec.get("mode", "all"))
        argv = [
            self.python, "-m", "serving", "--model_uri", uri, "--host", "127.0.0.1",
            "--http_port", str(slot.http), "--grpc_port", str(slot.grpc),
        ]  # fmt: skip
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{revision.name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=env,
                process_group=0,  # its own group, stopped alone; still in our session
            )
        logger.info(
            "revision %s: predictor pid %d on port %d (log %s)",
            revision.name, popen.pid, slot.http, log,
        )  # fmt: skip
        return Predictor(popen, slot, spec, log, time.monotonic())

    def process_for(self, revision: RevisionState) -> Predictor | None:
        found = self.processes.get(revision.name)
        if found is not None:
            return found
        for candidate in set(self.processes.values()):
            if candidate.alive() and candidate.serves(revision.template):
                self.processes[revision.name] = candidate
                logger.info("revision %s reuses the process on port %d", revision.name,
                            candidate.slot.http)  # fmt: skip
                return candidate
        return None

    def free_slot(self, keep: set[str]) -> Slot:
        used = {p.slot for name, p in self.processes.items() if p.alive() or name in keep}
        for slot in self.slots:
            if slot not in used:
                return slot
        # Both slots hold revisions that must run: the one the rolled-out revision does
        # not use gives way (a third revision at once replaces the older canary).
        kept = {self.processes[n].slot for n in keep if n in self.processes}
        victim = next((s for s in self.slots if s not in kept), self.slots[1])
        for name in [n for n, p in self.processes.items() if p.slot == victim]:
            self.drop_process(name)
        return victim

    def drop_process(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is not None and process not in self.processes.values():
            logger.info("stopping the predictor of %s (pid %d)", name, process.popen.pid)
            process.stop()

    def check_process(self, revision: RevisionState, process: Predictor) -> None:
        now = time.monotonic()
        if not process.alive():
            process.ready = False
            if process.exited_at is None:
                process.exited_at = now
            if not process.ever_ready and not revision.failed:
                revision.failed = (
                    f'Revision "{revision.name}" failed with message: the predictor process '
                    f"exited with code {process.popen.returncode} before it was ready; "
                    f"its log: {process.log}"
                )
                logger.warning("%s\n%s", revision.failed, log_tail(process.log))
                self.mark_revision(revision, False, revision.failed)
            return
        process.ready = http_ok(f"{process.url}/v2/health/ready", timeout=1)
        if process.ready and not process.ever_ready:
            process.ever_ready = True
            process.served_uri = self.served_uri(process)
        if process.ready and not revision.ever_ready:
            revision.ever_ready = True
            revision.failed = ""
            self.mark_revision(revision, True)
            logger.info("revision %s is ready", revision.name)
        if (
            not process.ever_ready
            and not revision.failed
            and now - process.started > self.progress_deadline
        ):
            revision.failed = (
                f'Revision "{revision.name}" failed with message: the predictor was not ready '
                f"within the progress deadline ({self.progress_deadline:.0f}s, "
                f"ProgressDeadlineExceeded); its log: {process.log}"
            )
            logger.warning(revision.failed)
            self.mark_revision(revision, False, revision.failed)

    def served_uri(self, process: Predictor) -> str | None:
        name = _env_value(process.template, MODEL_NAME) or self.name
        try:
            with urllib.request.urlopen(f"{process.url}/v2/models/{name}", timeout=2) as answer:
                body = json.load(answer)
        except (OSError, ValueError):
            return None
        uri = (body.get("parameters") or {}).get("model_uri")
        return str(uri) if uri else None

    def run_revision(self, revision: RevisionState, keep: set[str]) -> Predictor | None:
        """Make sure `revision` has a process (unless it failed); check it."""
        process = self.process_for(revision)
        if process is not None and not process.alive() and process.ever_ready:
            if time.monotonic() - (process.exited_at or 0) < RESTART_BACKOFF:
                return process
            logger.warning("the predictor of %s exited; starting it again", revision.name)
            self.processes.pop(revision.name, None)
            process = None
        if process is None:
            if revision.failed:
                return None
            process = self.start_process(revision, self.free_slot(keep))
            self.processes[revision.name] = process
        self.check_process(revision, process)
        return process

    # -- one reconcile -------------------------------------------------------------------

    def tick(self) -> None:
        try:
            obj = self.cluster.get(ISVCS, self.name)
        except NotFound:
            self.table.backends = ()
            self.table.not_ready_reason = f"InferenceService {self.name} does not exist"
            for name in list(self.processes):
                self.drop_process(name)
            self.table.synced = True
            return
        before = Component.from_status(obj.get("status") or {})
        latest = self.ensure_revision(obj)
        # Routed before this tick (their processes must not give way to the new one).
        keep = {n for n in (before.latest_rolledout, before.latest_ready) if n} | {latest.name}
        for name in sorted(keep):
            if name in self.revisions:
                self.run_revision(self.revisions[name], keep)
        latest_ready = max(
            (r for r in self.revisions.values() if r.ever_ready),
            key=lambda r: r.number,
            default=None,
        )
        ready_name = latest_ready.name if latest_ready else None
        targets = local_traffic.route(local_traffic.canary_percent(obj), before, ready_name)
        after = local_traffic.propagate(before, latest.name, ready_name, targets)
        routed = {t.revision for t in targets if t.revision and t.percent > 0}
        for name in sorted(routed - keep):
            if name in self.revisions:
                self.run_revision(self.revisions[name], keep | routed)
        # The route first, then the processes no route needs: no request goes to a
        # predictor that is being stopped.
        self.table.backends = tuple(self.backend(t) for t in targets if t.revision)
        self.table.not_ready_reason = latest.failed or f"revision {latest.name} is not ready yet"
        needed = routed | {latest.name}
        for name in [n for n in self.processes if n not in needed]:
            self.drop_process(name)
        self.write_status(obj, latest, after, targets)
        self.table.synced = True

    def backend(self, target: Target) -> Backend:
        name = str(target.revision)
        process = self.processes.get(name)
        if process is not None and process.ready:
            return Backend(name, target.percent, process.url, process.slot.grpc)
        revision = self.revisions.get(name)
        reason = (revision.failed if revision else "") or "its predictor is not ready"
        return Backend(name, target.percent, None, None, reason)

    def write_status(
        self, obj: Json, latest: RevisionState, component: Component, targets: list[Target]
    ) -> None:
        old = obj.get("status") or {}
        if latest.failed:
            configuration = ("False", "RevisionFailed", latest.failed)
        elif latest.ever_ready:
            configuration = ("True", "", "")
        else:
            configuration = (
                "Unknown",
                "RevisionMissing",
                f"Revision {latest.name} is not ready yet",
            )
        down = [b for b in self.table.backends if b.percent > 0 and b.http_url is None]
        if component.latest_ready is None:
            routes = ("Unknown", "RevisionMissing", "no revision is ready yet")
        elif down:
            routes = ("False", "RevisionUnavailable", "; ".join(
                f"revision {b.revision} takes {b.percent} % but {b.down_reason}" for b in down
            ))  # fmt: skip
        else:
            routes = ("True", "", "")
        ready = configuration if configuration[0] != "True" else routes
        conditions = [
            self.condition(old, "PredictorConfigurationReady", *configuration),
            self.condition(old, "PredictorRouteReady", *routes),
            self.condition(old, "PredictorReady", *ready),
            self.condition(old, "Ready", *ready),
        ]
        status: Json = {
            "observedGeneration": (obj.get("metadata") or {}).get("generation"),
            "url": self.url,
            "address": {"url": self.url},
            "components": {
                "predictor": local_traffic.component_status(component, targets, self.url)
            },
            "conditions": conditions,
        }
        if status != old:
            try:
                self.cluster.update_status(ISVCS, self.name, status)
            except LocalClusterError as e:
                logger.warning("could not write the status of %s: %s", self.name, e)

    @staticmethod
    def condition(old: Json, kind: str, status: str, reason: str, message: str) -> Json:
        found: Json = next((c for c in old.get("conditions") or [] if c.get("type") == kind), {})
        entry: Json = {"type": kind, "status": status}
        if reason:
            entry["reason"] = reason
        if message:
            entry["message"] = message
        # The transition time moves only when the status does (a no-op write stays one).
        same = found.get("status") == status
        entry["lastTransitionTime"] = (
            found.get("lastTransitionTime")
            if same and found.get("lastTransitionTime")
            else datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        return entry

    def stop_all(self) -> None:
        for process in set(self.processes.values()):
            process.stop()
        self.processes.clear()


def run_ticks(serving: LocalServing, interval: float, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            serving.tick()
        except (LocalClusterError, OSError, ValueError) as e:
            logger.warning("reconcile failed (retrying): %s", e)
        stop.wait(interval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo.local_serving",
        description="KServe + Knative stand-in: InferenceService in a local cluster folder -> "
        "predictor processes, status, and a router splitting its URL by the traffic.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dir", type=Path, required=True, help="the local cluster's folder")
    parser.add_argument("--name", required=True, help="the InferenceService's name")
    parser.add_argument("--port", type=int, default=8080, help="the router's HTTP port")
    parser.add_argument("--grpc-port", type=int, default=8081, help="the gRPC relay's port")
    parser.add_argument(
        "--slot", type=Slot.parse, action="append", default=[],
        help="HTTP_PORT:GRPC_PORT of a revision slot; give it twice",
    )  # fmt: skip
    parser.add_argument("--log-dir", type=Path, default=Path(".demo/logs"))
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between polls")
    parser.add_argument(
        "--progress-deadline", type=float, default=180.0,
        help="seconds a new revision has to turn ready before it is reported failed",
    )  # fmt: skip
    return parser


async def serve(serving: LocalServing, port: int, grpc_port: int, interval: float) -> None:
    import uvicorn

    stop = threading.Event()
    ticker = threading.Thread(target=run_ticks, args=(serving, interval, stop), daemon=True)
    ticker.start()
    relay = await serve_grpc_relay(serving.table, "127.0.0.1", grpc_port)
    config = uvicorn.Config(
        build_app(serving.table), host="127.0.0.1", port=port, log_level="warning",
        access_log=False, lifespan="on",
    )  # fmt: skip
    try:
        await uvicorn.Server(config).serve()  # returns on SIGTERM / SIGINT
    finally:
        relay.close()
        stop.set()
        ticker.join(30)
        serving.stop_all()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per proxied request
    args = build_parser().parse_args(argv)
    if len(args.slot) != 2 or len(set(args.slot)) != 2:
        print("local_serving: give two different --slot HTTP:GRPC", file=sys.stderr)
        return 2
    if not args.dir.is_dir():
        print(f"local_serving: no local cluster at {args.dir} (run make demo)", file=sys.stderr)
        return 2
    serving = LocalServing(
        cluster=LocalCluster(args.dir),
        name=args.name,
        slots=(args.slot[0], args.slot[1]),
        log_dir=args.log_dir,
        url=f"http://127.0.0.1:{args.port}",
        progress_deadline=args.progress_deadline,
    )
    serving.load_revisions()
    # uvicorn stops on SIGTERM/SIGINT and then raises the signal again for the handler
    # it found: a no-op one here, so the `finally` that stops the predictors runs.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    asyncio.run(serve(serving, args.port, args.grpc_port, args.interval))
    logger.info("stopped, with its predictors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
