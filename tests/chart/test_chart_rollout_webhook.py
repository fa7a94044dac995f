"""MLflow's webhook as the controller's faster trigger (`rollout.controller.webhook`),
rendered by Helm's own engine: off by default; on, a Service for the controller's
`/webhook`, a NetworkPolicy admitting MLflow's pods to it, the controller's secret, URL
and name, and the MLflow server's settings without which it delivers nowhere in a
cluster. tests/rollout/test_controller_webhook.py runs a real `mlflow server` with
exactly these settings against a real controller."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

import pytest

from rollout import webhook
from tests.chart.render import Rendered, render
from tests.chart.validation import containers_of

pytestmark = pytest.mark.chart

NAME = "mlops-rollout-controller"
SECRET = "mlops-rollout-webhook"
HOOK = {"enabled": True, "existingSecret": SECRET}
ON = {"rollout": {"controller": {"enabled": True, "webhook": HOOK}}}
MLFLOW_SETTINGS = {
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS",
    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY",
}


def env_of(rendered: Rendered, deployment_suffix: str, container: str) -> dict[str, Any]:
    deployment = rendered.one("Deployment", deployment_suffix)
    found = next(c for _, _, c in containers_of(deployment) if c["name"] == container)
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in found["env"]}


def mlflow_webhook_env(rendered: Rendered) -> dict[str, Any]:
    """The MLflow server's webhook settings as the chart renders them."""
    env = env_of(rendered, "-mlflow", "mlflow")
    return {name: value for name, value in env.items() if name.startswith("MLFLOW_WEBHOOK_")}


@pytest.fixture(scope="module")
def on() -> Rendered:
    return render(ON)


@pytest.mark.parametrize("controller", [False, True])
def test_off_by_default_nothing_of_it_is_rendered(controller: bool) -> None:
    rendered = render({"rollout": {"controller": {"enabled": controller}}})
    assert not [o for o in rendered.of_kind("Service") if o["metadata"]["name"] == NAME]
    assert not [o for o in rendered.of_kind("NetworkPolicy") if o["metadata"]["name"] == NAME]
    assert not mlflow_webhook_env(rendered)
    if controller:
        assert not {
            k for k in env_of(rendered, "-rollout-controller", "controller") if "WEBHOOK" in k
        }


def test_the_controller_gets_its_secret_url_and_name(on: Rendered) -> None:
    env = env_of(on, "-rollout-controller", "controller")
    assert env[webhook.SECRET_ENV] == {"secretKeyRef": {"name": SECRET, "key": "webhook-secret"}}
    assert env[webhook.NAME_ENV] == NAME
    url = urlparse(env[webhook.URL_ENV])
    assert (url.scheme, url.hostname, url.port, url.path) == (
        "http", f"{NAME}.mlops.svc", 9090, "/webhook"
    )  # fmt: skip


def test_the_service_reaches_the_controller_s_webhook_port(on: Rendered) -> None:
    service = next(o for o in on.of_kind("Service") if o["metadata"]["name"] == NAME)
    deployment = on.one("Deployment", "-rollout-controller")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [port] = service["spec"]["ports"]
    [(_, _, container)] = list(containers_of(deployment))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["port"] == ports[port["targetPort"]] == 9090  # where /webhook is served


def test_the_network_policy_admits_mlflow_and_prometheus_only(on: Rendered) -> None:
    policy = next(o for o in on.of_kind("NetworkPolicy") if o["metadata"]["name"] == NAME)
    pod_labels = on.one("Deployment", "-rollout-controller")["spec"]["template"]["metadata"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels["labels"].items()
    [rule] = policy["spec"]["ingress"]
    mlflow_pod = on.one("Deployment", "-mlflow")["spec"]["template"]["metadata"]["labels"]
    pods, namespaces = rule["from"]
    assert pods["podSelector"]["matchLabels"].items() <= mlflow_pod.items()
    assert pods["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "mlflow"
    assert namespaces["namespaceSelector"] == on.values["networkPolicy"]["metricsNamespaceSelector"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    off = render({**ON, "networkPolicy": {"enabled": False}})
    assert not [o for o in off.of_kind("NetworkPolicy") if o["metadata"]["name"] == NAME]


def test_mlflow_is_told_to_deliver_to_a_cluster_internal_http_url(on: Rendered) -> None:
    env = mlflow_webhook_env(on)
    assert set(env) == MLFLOW_SETTINGS
    assert "http" in env["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"].split(",")
    assert env["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] == "true"
    assert env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"] == {
        "secretKeyRef": {"name": SECRET, "key": "encryption-key"}
    }


def test_without_the_secret_the_render_fails_and_says_what_to_set() -> None:
    with pytest.raises(Exception, match=re.escape("rollout.controller.webhook.existingSecret")):
        render({"rollout": {"controller": {"enabled": True, "webhook": {"enabled": True}}}})
