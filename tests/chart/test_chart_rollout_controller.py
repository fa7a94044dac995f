"""The rollout controller in the chart (`rollout.controller.enabled`), rendered by Helm's
own engine: one hardened replica that cannot run twice, the least privilege, probes and
a PodMonitor, arguments the controller's own parser accepts, and the ownership of the
predictor's MODEL_URI and canaryTrafficPercent (docs/rollouts.md, "One owner")."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from rollout.settings import build_parser, settings_from_args
from tests.chart.render import CHART_DIR, Rendered, render
from tests.chart.validation import containers_of

pytestmark = pytest.mark.chart

ON = {"rollout": {"controller": {"enabled": True}}}
NAME = "mlops-rollout-controller"


@pytest.fixture(scope="module")
def on() -> Rendered:
    return render(ON)


def named(rendered: Rendered, kind: str) -> dict[str, Any]:
    return next(o for o in rendered.of_kind(kind) if o["metadata"]["name"] == NAME)


def test_the_controller_is_off_by_default(default_render: Rendered) -> None:
    names = {o["metadata"]["name"] for o in default_render.objects}
    assert NAME not in names


def test_one_replica_that_cannot_run_twice(on: Rendered) -> None:
    deployment = named(on, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == NAME
    [(_, _, container)] = list(containers_of(deployment))
    assert container["command"] == ["python", "-m", "rollout", "controller"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9090, "health": 8080}
    # Its token: a projected, expiring one, mounted where the in-cluster config reads it.
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["kube-api-access"]["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
    assert mounts["kube-api-access"]["readOnly"] is True
    assert mounts["tmp"]["mountPath"] == "/tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    sources = volumes["kube-api-access"]["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert "emptyDir" in volumes["tmp"]


def test_the_role_grants_exactly_what_the_docs_list(on: Rendered) -> None:
    role = named(on, "Role")
    rules = sorted(
        (r["apiGroups"][0], r["resources"][0], tuple(r.get("resourceNames", ())), tuple(r["verbs"]))
        for r in role["rules"]
    )
    assert rules == [
        ("", "events", (), ("create",)),
        ("coordination.k8s.io", "leases", (), ("create",)),
        ("coordination.k8s.io", "leases", ("breast-cancer-rollout",), ("get", "update", "delete")),
        ("serving.kserve.io", "inferenceservices", (), ("list", "watch")),
        ("serving.kserve.io", "inferenceservices", ("breast-cancer",), ("get", "patch")),
    ]
    binding = named(on, "RoleBinding")
    assert binding["roleRef"]["name"] == NAME
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": "mlops"}]
    assert named(on, "ServiceAccount")["automountServiceAccountToken"] is False


def test_the_pod_monitor_scrapes_the_controller_s_metrics_port(on: Rendered) -> None:
    monitor = named(on, "PodMonitor")
    pod_labels = named(on, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    off = render({**ON, "monitoring": {"podMonitor": {"enabled": False}}})
    assert NAME not in {o["metadata"]["name"] for o in off.of_kind("PodMonitor")}


def test_the_arguments_parse_into_the_controller_s_settings() -> None:
    values = {
        "rollout": {
            "controller": {
                "enabled": True,
                "steps": "5,20,100",
                "soakSeconds": 60,
                "graceSeconds": 45,
                "pollSeconds": 10,
                "minRequests": 200,
                "match": 'namespace="mlops"',
            }
        }
    }
    [(_, _, container)] = list(containers_of(named(render(values), "Deployment")))
    settings = settings_from_args(build_parser({}).parse_args(["controller", *container["args"]]))
    assert settings.command == "controller"
    assert settings.controller_isvc == "breast-cancer" and settings.model_name == "breast-cancer"
    assert settings.kube.namespace == "mlops"
    assert settings.tracking_uri == "http://mlops-mlflow:5000"
    assert settings.prometheus_url == "http://kube-prometheus-stack-prometheus.monitoring:9090"
    assert settings.schedule.steps == (5, 20, 100)
    assert settings.schedule.soak_seconds == 60
    assert (settings.grace_seconds, settings.poll_seconds) == (45, 10)
    assert settings.thresholds.min_requests == 200
    assert settings.extra_matchers == 'namespace="mlops"'
    assert (settings.controller_metrics_port, settings.controller_health_port) == (9090, 8080)


def predictor_container(rendered: Rendered) -> tuple[dict[str, Any], dict[str, Any]]:
    isvc = rendered.one("InferenceService")
    predictor = isvc["spec"]["predictor"]
    return predictor, predictor["containers"][0]


def model_uri(container: dict[str, Any]) -> str:
    return str(next(e["value"] for e in container["env"] if e["name"] == "MODEL_URI"))


@pytest.mark.parametrize("upgrade", [False, True], ids=["install", "upgrade"])
def test_with_no_live_object_the_values_decide(upgrade: bool) -> None:
    """No live InferenceService (a first install; `helm template` finds none either): the
    values set MODEL_URI and canaryTrafficPercent, as without the controller."""
    values = {**ON, "predictor": {"modelVersion": "3", "canaryTrafficPercent": 10}}
    predictor, container = predictor_container(
        render(values, is_install=not upgrade, is_upgrade=upgrade)
    )
    assert model_uri(container) == "models:/breast-cancer/3"
    assert predictor["canaryTrafficPercent"] == 10
    predictor, container = predictor_container(
        render(ON, is_install=not upgrade, is_upgrade=upgrade)
    )
    assert model_uri(container) == "models:/breast-cancer@champion"
    assert "canaryTrafficPercent" not in predictor


def owned_fields(live: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The chart's `mlops.predictor.ownedFields` on `live`, on Helm's engine: the chart
    copied with one more template that calls it (`lookup` answers nothing offline)."""
    import json

    import helm_python as helm

    chart = tmp_path / "mlops"
    shutil.copytree(CHART_DIR, chart)
    (chart / "values.schema.json").unlink()  # the test's extra value is not the chart's
    (chart / "templates" / "zz-owned.yaml").write_text(
        '{{ include "mlops.predictor.ownedFields" .Values.testLive }}\n'
    )
    with helm.Chart.load(chart) as loaded:
        files = loaded.render({"testLive": live}, name="mlops", namespace="mlops")
    return dict(json.loads(files["mlops/templates/zz-owned.yaml"]))


def test_the_owned_fields_are_read_from_a_live_object(tmp_path: Path) -> None:
    live = render(ON).one("InferenceService")
    env = live["spec"]["predictor"]["containers"][0]["env"]
    next(e for e in env if e["name"] == "MODEL_URI")["value"] = "models:/breast-cancer/7"
    assert owned_fields(live, tmp_path / "a") == {"modelUri": "models:/breast-cancer/7"}
    live["spec"]["predictor"]["canaryTrafficPercent"] = 25
    assert owned_fields(live, tmp_path / "b") == {
        "modelUri": "models:/breast-cancer/7",
        "canaryTrafficPercent": 25,
    }
    assert owned_fields({}, tmp_path / "c") == {}  # no live object: an install
