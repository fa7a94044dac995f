"""MLflow 3's webhook as the controller's fast trigger, wired as the chart wires it
(`rollout.controller.webhook`): the controller registers its own webhook in a real
`mlflow server`, which delivers a signed `model_version_alias.created` event to it; the
controller starts the rollout long before its poll is due; a delivery without the
secret's signature is refused.

The server runs with the webhook settings the chart renders for its MLflow Deployment
(plain HTTP and private addresses allowed, which 127.0.0.1 needs as much as a Service IP;
the encryption key of the stored secrets) and the chart's two workers. Only
MLFLOW_WEBHOOK_CACHE_TTL is the test's own: MLflow caches each event's webhook list for
60 s, and the test's alias events come seconds apart.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from rollout import webhook
from tests.rollout.fake_apiserver import FakeApiServer, inference_service, kubeconfig_yaml
from tests.rollout.helpers import NAMESPACE, TOKEN, isvc_path, register_versions
from tests.support import (
    BIN_DIR,
    PYTHON,
    MlflowServer,
    free_port,
    mlflow_server_args,
    start_process,
    wait_http_ok,
    wait_until,
)

pytestmark = pytest.mark.integration

SECRET = "webhook-secret-for-tests"
HOOK_NAME = "mlops-rollout-controller"


@contextmanager
def mlflow_as_the_chart_runs_it(folder: Path, port: int) -> Iterator[MlflowServer]:
    """`mlflow server` with the webhook settings and workers of the chart's MLflow."""
    from cryptography.fernet import Fernet

    from tests.chart.render import render
    from tests.chart.test_chart_rollout_webhook import ON, mlflow_webhook_env

    rendered = render(ON)
    settings = mlflow_webhook_env(rendered)
    # The Secret's value: a Fernet key, as `docs/rollouts.md` has the operator make it.
    settings["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] = Fernet.generate_key().decode()
    args = mlflow_server_args(folder, port)
    args[args.index("--workers") + 1] = str(rendered.values["mlflow"]["workers"])
    folder.mkdir()
    process = start_process(
        args,
        folder / "mlflow.log",
        env={
            "PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_WEBHOOK_CACHE_TTL": "1",
            **settings,
        },
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(process, f"{url}/health", 90, "mlflow server")
        yield MlflowServer(url=url, port=port, process=process, root=folder)
    finally:
        process.stop()


class LaterMlflow:
    """One server for the module, started by the first test that needs it running: the
    registration test first watches the controller try while nothing answers yet."""

    def __init__(self, folder: Path, stack: ExitStack) -> None:
        self.folder, self.stack, self.port = folder, stack, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: MlflowServer | None = None

    def started(self) -> MlflowServer:
        if self.server is None:
            self.server = self.stack.enter_context(
                mlflow_as_the_chart_runs_it(self.folder / "mlflow", self.port)
            )
        return self.server


@pytest.fixture(scope="module")
def later_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaterMlflow]:
    with ExitStack() as stack:
        yield LaterMlflow(tmp_path_factory.mktemp("webhook"), stack)


@pytest.fixture
def delivering_mlflow(later_mlflow: LaterMlflow) -> MlflowServer:
    return later_mlflow.started()


def test_the_webhook_is_registered_once_mlflow_answers(
    later_mlflow: LaterMlflow, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The controller may start before MLflow (a fresh install): it keeps trying, and
    registers the webhook as soon as the server answers."""
    from mlflow import MlflowClient

    if later_mlflow.server is not None:
        pytest.skip("the module's MLflow already runs (this test ran after the others)")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast while it is down
    monkeypatch.setattr(webhook, "REGISTER_RETRY_SECONDS", 0.5)
    target = f"http://127.0.0.1:{free_port()}/webhook"
    stopping = threading.Event()
    caplog.set_level(logging.INFO, logger="rollout.webhook")
    thread = webhook.keep_registering(later_mlflow.url, HOOK_NAME, target, SECRET, stopping)
    try:
        wait_until(lambda: "not registered in MLflow" in caplog.text, 60, "a failed attempt")
        assert thread.is_alive()
        server = later_mlflow.started()
        thread.join(60)
        assert not thread.is_alive(), caplog.text
        [hook] = [h for h in MlflowClient(server.url).list_webhooks() if h.name == HOOK_NAME]
        assert hook.url == target
        assert f"webhook {HOOK_NAME} created in MLflow" in caplog.text
    finally:
        stopping.set()
        thread.join(10)


def test_a_signed_alias_event_starts_the_rollout_before_the_poll(
    delivering_mlflow: MlflowServer, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    metrics_port = free_port()
    base = f"http://127.0.0.1:{metrics_port}"
    model = register_versions(delivering_mlflow, "webhook-model")
    model.client.delete_registered_model_alias(model.name, "challenger")
    with FakeApiServer().running() as fake_api:
        path = isvc_path(model.name)
        fake_api.put(path, inference_service(model.name, NAMESPACE, f"models:/{model.name}/1"))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(kubeconfig_yaml(fake_api.url, NAMESPACE, TOKEN))
        controller = start_process(
            [
                PYTHON, "-m", "rollout", "controller", "--kubeconfig", str(kubeconfig),
                "--namespace", NAMESPACE, "--tracking-uri", model.tracking_uri,
                "--prometheus-url", f"http://127.0.0.1:{free_port()}", "--listen", "127.0.0.1",
                "--metrics-port", str(metrics_port), "--health-port", str(free_port()),
                "--poll", "600", "--soak", "300", "--step-timeout", "600",
            ],
            tmp_path / "controller.log",
            # As the chart sets them, the URL on 127.0.0.1 instead of the Service's name.
            env={webhook.SECRET_ENV: SECRET, webhook.URL_ENV: f"{base}/webhook",
                 webhook.NAME_ENV: HOOK_NAME},
        )  # fmt: skip
        try:
            wait_http_ok(controller, f"{base}/readyz", 60, "the controller")
            client = MlflowClient(delivering_mlflow.url)

            def registered() -> list[Any]:
                return [hook for hook in client.list_webhooks() if hook.name == HOOK_NAME]

            # Created here, or (after the registration test) updated to this URL.
            wait_until(
                lambda: [h.url for h in registered()] == [f"{base}/webhook"],
                60,
                "the controller's webhook in MLflow",
            )
            [hook] = registered()
            assert [str(e) for e in hook.events] == ["model_version_alias.created"]
            # A restart registers again: the same one webhook, brought up to date.
            assert webhook.register(client, HOOK_NAME, f"{base}/webhook", SECRET) == "updated"
            assert len(registered()) == 1
            idle = f'rollout_phase{{model_name="{model.name}",phase="idle"}} 1.0'
            wait_until(  # the worker's first tick is done: no challenger, poll in 600 s
                lambda: idle in requests.get(f"{base}/metrics", timeout=5).text, 60, "a tick"
            )
            # Unsigned, or signed with another secret: 401, nothing woken.
            body = json.dumps(
                {
                    "entity": "model_version_alias",
                    "action": "created",
                    "data": {"name": model.name, "alias": "challenger", "version": "2"},
                }
            )
            stamp, delivery = str(int(time.time())), "forged-1"
            forged = {
                webhook.DELIVERY_HEADER: delivery,
                webhook.TIMESTAMP_HEADER: stamp,
                webhook.SIGNATURE_HEADER: webhook.signature("wrong", delivery, stamp, body),
            }
            answer = requests.post(f"{base}/webhook", data=body, headers=forged, timeout=5)
            assert answer.status_code == 401 and "signature" in answer.json()["error"]
            answer = requests.post(f"{base}/webhook", data=body, timeout=5)
            assert answer.status_code == 401 and "missing" in answer.json()["error"]

            model.client.set_registered_model_alias(model.name, "challenger", "2")
            wait_until(
                lambda: "RolloutStarted" in fake_api.event_reasons(), 60, "the webhook's start"
            )
            # Woken by the delivery (the poll is 600 s away), which names the worker.
            assert "webhook: @challenger of webhook-model is version 2; waking mlops/" in (
                controller.log()
            )
            spec = fake_api.get(path)["spec"]["predictor"]
            assert spec["canaryTrafficPercent"] == 10
        finally:
            controller.stop()


def signed(body: str, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    stamp = str(int(time.time() if at is None else at))
    return {
        webhook.DELIVERY_HEADER: "d-1",
        webhook.TIMESTAMP_HEADER: stamp,
        webhook.SIGNATURE_HEADER: webhook.signature(secret, "d-1", stamp, body),
    }


def test_only_a_recent_delivery_signed_with_the_secret_is_read() -> None:
    body = json.dumps({"entity": "model_version_alias", "action": "created",
                       "data": {"name": "m", "alias": "challenger", "version": "4"}})  # fmt: skip
    payload = webhook.verify(SECRET, signed(body), body.encode())
    assert webhook.alias_event(payload) == webhook.AliasEvent("m", "challenger", "4")
    with pytest.raises(webhook.WebhookRefused, match="old"):
        webhook.verify(SECRET, signed(body, at=time.time() - 900), body.encode())
    with pytest.raises(webhook.WebhookRefused, match="does not match"):
        webhook.verify(SECRET, signed(body, secret="other"), body.encode())
    tampered = body.replace('"4"', '"5"')
    with pytest.raises(webhook.WebhookRefused, match="does not match"):
        webhook.verify(SECRET, signed(body), tampered.encode())
    other = json.dumps({"entity": "model_version", "action": "created", "data": {}})
    assert webhook.alias_event(webhook.verify(SECRET, signed(other), other.encode())) is None
