"""`python -m rollout controller`: the in-cluster controller, on kopf.

kopf logs in, lists and watches the InferenceServices of one namespace, serves the
liveness probe, and stops cleanly on SIGTERM. For each InferenceService whose
predictor serves a `models:/` URI it runs a worker thread that calls
`Reconciler.tick()` (reconcile.py) and sleeps the delay the tick returns.

Why workers of our own instead of `@kopf.daemon` or `@kopf.timer`: kopf puts a
finalizer on every object a daemon or timer runs for, so an InferenceService could not
be deleted while this controller is uninstalled or down. `@kopf.on.event` adds no
finalizer and writes nothing on the object; kopf's own annotations never appear on it.

Readiness (`/readyz`, beside `/metrics` on --metrics-port) is ours: ready once kopf
has started and every worker's last tick reached the API server, MLflow and
Prometheus (or was refused for a stated reason). With ROLLOUT_WEBHOOK_SECRET set, the
same port takes MLflow's signed webhook deliveries at `POST /webhook` (webhook.py): an
alias event wakes the model's worker before its poll is due.

`--target local` (`run_local`): the same Controller, Worker and Reconciler against the
local cluster (rollout/local.py), without kopf, which is only the cluster's watch and
dispatch: one worker for the InferenceService `--isvc`, `/metrics`, `/readyz` and
`/healthz` on --metrics-port, each analysis's verdict table on stdout, and SIGTERM or
SIGINT ending the tick in progress before the process exits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from contract import uris
from rollout import webhook
from rollout.commands import Rollout
from rollout.controller_metrics import ControllerMetrics
from rollout.errors import ConfigError, RefusedError, RolloutError
from rollout.kube import InferenceServiceApi, InferenceServices, connect
from rollout.reconcile import ControllerConfig, Reconciler
from rollout.settings import Settings

logger = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 1 << 20
STOP_JOIN_SECONDS = 25.0
"""How long SIGTERM waits for a tick in progress (a promotion, a rollback) to end."""


class Worker:
    """One InferenceService's ticks, in a thread (the rollout's clients are synchronous)."""

    def __init__(self, key: str, reconciler: Reconciler) -> None:
        self.key = key
        self.reconciler = reconciler
        self.stopping = threading.Event()
        self.woken = threading.Event()
        """Set by a webhook delivery (or stop()): the next tick runs now."""
        self.healthy = True
        self.last_error = ""
        self.thread = threading.Thread(target=self._run, name=f"rollout {key}", daemon=True)

    def _run(self) -> None:
        retry = min(self.reconciler.config.poll_seconds, 10.0)
        while not self.stopping.is_set():
            try:
                delay = self.reconciler.tick()
                self.healthy, self.last_error = True, ""
            except RefusedError as e:
                logger.warning("%s: %s", self.key, e)
                self.healthy, self.last_error, delay = True, str(e), retry
            except RolloutError as e:
                logger.warning("%s: %s; trying again in %.0fs", self.key, e, retry)
                self.healthy, self.last_error, delay = False, str(e), retry
            except Exception as e:  # a bug must not end the worker: log it, try again
                logger.exception("%s: unexpected error", self.key)
                self.healthy, self.last_error, delay = False, f"{type(e).__name__}: {e}", retry
            self.woken.wait(max(0.05, delay))
            self.woken.clear()

    def wake(self) -> None:
        self.woken.set()

    def stop(self) -> None:
        self.stopping.set()
        self.woken.set()


class Controller:
    """The workers, the metrics, readiness; kopf's handlers call into it."""

    def __init__(
        self,
        settings: Settings,
        config: ControllerConfig,
        *,
        kube_factory: Callable[[Settings], InferenceServiceApi] = lambda s: connect(s.kube),
        webhook_secret: str | None = None,
    ) -> None:
        self.settings = settings
        self.webhook_secret = webhook_secret
        self.config = config
        self.metrics = ControllerMetrics()
        self.kube_factory = kube_factory
        self.workers: dict[str, Worker] = {}
        self.started = threading.Event()
        self.lock = threading.Lock()

    def wanted(self, body: Any) -> str | None:
        """The model name an InferenceService serves, or None when it is not ours."""
        only = self.settings.controller_isvc
        if only and body.get("metadata", {}).get("name") != only:
            return None
        try:
            containers = body["spec"]["predictor"]["containers"]
            env = {e.get("name"): e.get("value") for e in containers[0].get("env") or []}
            return uris.parse_model_uri(str(env["MODEL_URI"])).name
        except (KeyError, IndexError, TypeError, AttributeError, uris.InvalidModelUri):
            return None

    def seen(self, namespace: str, name: str, model_name: str) -> None:
        key = f"{namespace}/{name}"
        with self.lock:
            if key in self.workers:
                return
            settings = dataclasses.replace(
                self.settings,
                model_name=model_name,
                kube=dataclasses.replace(self.settings.kube, name=name, namespace=namespace),
            )
            rollout = Rollout(settings, kube_factory=self.kube_factory)
            worker = Worker(key, Reconciler(rollout, self.config, self.metrics))
            self.workers[key] = worker
        logger.info("watching InferenceService %s (model %s)", key, model_name)
        worker.thread.start()

    def gone(self, namespace: str, name: str) -> None:
        with self.lock:
            worker = self.workers.pop(f"{namespace}/{name}", None)
        if worker is not None:
            logger.info("InferenceService %s/%s deleted; its worker stops", namespace, name)
            worker.stop()

    def stop(self) -> None:
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.thread.join(STOP_JOIN_SECONDS)

    def delivered(self, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        """A webhook delivery: (HTTP status, answer). Only a signed, recent alias event of
        a model some worker drives wakes that worker."""
        if not self.webhook_secret:
            return 404, {"error": f"webhooks are off; set {webhook.SECRET_ENV} to take them"}
        try:
            payload = webhook.verify(self.webhook_secret, headers, body)
        except webhook.WebhookRefused as e:
            logger.warning("webhook delivery refused: %s", e)
            return 401, {"error": str(e)}
        event = webhook.alias_event(payload)
        if event is None:
            return 200, {"woken": []}
        with self.lock:
            woken = [k for k, w in self.workers.items() if w.reconciler.model == event.model_name]
            for key in woken:
                self.workers[key].wake()
        logger.info(
            "webhook: @%s of %s is version %s; waking %s",
            event.alias,
            event.model_name,
            event.version,
            ", ".join(woken) or "no worker",
        )
        return 200, {"woken": woken}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        with self.lock:
            workers = {k: (w.healthy, w.last_error) for k, w in self.workers.items()}
        ready = self.started.is_set() and all(ok for ok, _ in workers.values())
        return ready, {
            "ready": ready,
            "started": self.started.is_set(),
            "inference_services": {
                k: {"ok": ok, "last_error": error} for k, (ok, error) in workers.items()
            },
        }


def serve_metrics(controller: Controller, host: str, port: int) -> ThreadingHTTPServer:
    """`/metrics` (Prometheus text) and `/readyz` (200 or 503, with the reasons)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/metrics":
                code, ctype, data = (
                    200,
                    CONTENT_TYPE_LATEST,
                    generate_latest(controller.metrics.registry),
                )
            elif path == "/healthz":  # alive: the cluster's is kopf's, on --health-port
                code, ctype, data = 200, "application/json", b'{"alive": true}'
            elif path == "/readyz":
                ready, details = controller.readiness()
                code, ctype = (200 if ready else 503), "application/json"
                data = json.dumps(details).encode()
            else:
                code, ctype = 404, "application/json"
                data = json.dumps(
                    {"error": f"no {path}; try /metrics, /readyz or /healthz"}
                ).encode()
            self._answer(code, ctype, data)

        def do_POST(self) -> None:
            path = self.path.split("?")[0]
            length = int(self.headers.get("Content-Length") or 0)
            if path != "/webhook" or length > MAX_WEBHOOK_BYTES:
                why = f"no POST {path}" if path != "/webhook" else "the delivery is too large"
                code, answer = (404 if path != "/webhook" else 413), {"error": why}
            else:
                code, answer = controller.delivered(self.headers, self.rfile.read(length))
            self._answer(code, "application/json", json.dumps(answer).encode())

        def _answer(self, code: int, ctype: str, data: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def build_registry(controller: Controller) -> Any:
    """kopf's handlers, in a registry of their own (not kopf's global default)."""
    import kopf

    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> Any:
        # The same configuration the CLI reads (kubeconfig, then the pod's service
        # account), asked again on every login, so a rotated token is read anew.
        services = controller.kube_factory(controller.settings)
        assert isinstance(services, InferenceServices)  # kopf runs on Kubernetes only
        config = services.api_client.configuration
        token = config.get_api_key_with_prefix("authorization") or ""
        scheme, _space, credential = token.partition(" ")
        return kopf.ConnectionInfo(
            server=str(config.host),
            scheme=scheme or None,
            token=credential or None,
            ca_path=config.ssl_ca_cert or None,
            insecure=not config.verify_ssl,
            certificate_path=config.cert_file or None,
            private_key_path=config.key_file or None,
            default_namespace=services.namespace,
        )

    @kopf.on.startup(registry=registry)
    def startup(settings: Any, **_: Any) -> None:
        # The Role is namespaced: kopf must not try to list namespaces or CRDs.
        settings.scanning.disabled = True
        settings.posting.level = logging.WARNING
        controller.started.set()

    @kopf.on.cleanup(registry=registry)
    def cleanup(**_: Any) -> None:
        controller.stop()

    @kopf.on.event("serving.kserve.io", "v1beta1", "inferenceservices", registry=registry)
    def on_event(event: Any, body: Any, **_: Any) -> None:
        metadata = body.get("metadata", {})
        namespace, name = metadata.get("namespace", ""), metadata.get("name", "")
        if event.get("type") == "DELETED":
            controller.gone(namespace, name)
            return
        model_name = controller.wanted(body)
        if model_name is not None:
            controller.seen(namespace, name, model_name)

    @kopf.on.probe(id="workers", registry=registry)
    def workers(**_: Any) -> int:
        return len(controller.workers)

    return registry


def run(settings: Settings, config: ControllerConfig) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop."""
    import kopf

    controller = Controller(
        settings, config, webhook_secret=os.environ.get(webhook.SECRET_ENV) or None
    )
    namespace = settings.kube.namespace or controller.kube_factory(settings).namespace
    metrics_server = serve_metrics(
        controller, settings.controller_listen, settings.controller_metrics_port
    )
    registration_stop = threading.Event()
    webhook_url = os.environ.get(webhook.URL_ENV)
    if controller.webhook_secret and webhook_url:  # the chart's rollout.controller.webhook
        name = os.environ.get(webhook.NAME_ENV) or webhook.DEFAULT_NAME
        webhook.keep_registering(
            settings.tracking_uri, name, webhook_url, controller.webhook_secret, registration_stop
        )
    logger.info(
        "rollout controller for namespace %s: metrics and /readyz on :%d, /healthz on :%d",
        namespace,
        settings.controller_metrics_port,
        settings.controller_health_port,
    )
    try:
        asyncio.run(
            kopf.operator(
                registry=build_registry(controller),
                namespaces=[namespace],
                clusterwide=False,
                # One replica (the chart's Recreate strategy): no peering objects needed.
                standalone=True,
                liveness_endpoint=(
                    f"http://{settings.controller_listen}:{settings.controller_health_port}/healthz"
                ),
            )
        )
    finally:
        registration_stop.set()
        controller.stop()
        metrics_server.shutdown()
    return 0


def run_local(settings: Settings, config: ControllerConfig) -> int:
    """The controller against the local cluster: one worker, no kopf; 0 on SIGTERM/SIGINT."""
    from rollout.local import connect_local

    def local(s: Settings) -> InferenceServiceApi:
        return connect_local(s.local_dir, s.kube.name)

    services = local(settings)
    controller = Controller(
        settings,
        config,
        kube_factory=local,
        webhook_secret=os.environ.get(webhook.SECRET_ENV) or None,
    )
    model_name = controller.wanted(services.get())  # a missing object: refused, with its path
    if model_name is None:
        raise RefusedError(
            f"{services.describe()} is not one the controller drives: its predictor serves "
            "no models:/ URI in MODEL_URI (or --isvc names another)"
        )
    stopping = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        logger.info("signal %d: stopping after the tick in progress", signum)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    try:
        metrics_server = serve_metrics(
            controller, settings.controller_listen, settings.controller_metrics_port
        )
    except OSError as e:
        raise ConfigError(
            f"cannot serve /metrics on {settings.controller_listen}:"
            f"{settings.controller_metrics_port} ({e}); pass --metrics-port a free port "
            "(the default 9090 is also Prometheus's)"
        ) from e
    logger.info(
        "rollout controller (local cluster %s): metrics, /readyz and /healthz on :%d",
        settings.local_dir,
        settings.controller_metrics_port,
    )
    try:
        controller.seen(services.namespace, services.name, model_name)
        controller.started.set()
        stopping.wait()
    finally:
        controller.stop()
        metrics_server.shutdown()
    logger.info("rollout controller stopped")
    return 0
