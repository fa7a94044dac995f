"""Hardened defaults on every pod of every scenario, images pinned, Secrets never rendered."""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest

from rollout.lock import lease_name
from tests.chart.render import Rendered, render
from tests.chart.validation import containers_of, object_name

pytestmark = pytest.mark.chart

# Env var names that carry credentials; their value must come from a Secret.
CREDENTIAL_NAME = re.compile(
    r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|BACKEND_STORE_URI|DATABASE_URL|_DSN$"
)


def effective(pod_spec: dict[str, Any], container: dict[str, Any], field: str) -> Any:
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    own = (container.get("securityContext") or {}).get(field)
    return own if own is not None else (pod_spec.get("securityContext") or {}).get(field)


def all_renders(rendered_scenarios: dict[str, Rendered]) -> list[tuple[str, Rendered]]:
    extra = {
        "make-train": render({"training": {"runSuffix": "20260101120000"}}),
        "postgresql-pvc": render(
            {"mlflow": {"backend": {"type": "postgresql", "existingSecret": "pg"}}}
        ),
    }
    return sorted({**rendered_scenarios, **extra}.items())


def test_every_container_is_hardened(rendered_scenarios: dict[str, Rendered]) -> None:
    checked = 0
    for scenario, rendered in all_renders(rendered_scenarios):
        for where, pod_spec, container in (
            c for obj in rendered.objects for c in containers_of(obj)
        ):
            context = container.get("securityContext") or {}
            label = f"{scenario}: {where}"
            assert effective(pod_spec, container, "runAsNonRoot") is True, label
            assert effective(pod_spec, container, "runAsUser") not in (None, 0), label
            assert context.get("allowPrivilegeEscalation") is False, label
            assert context.get("privileged") in (None, False), label
            assert context.get("readOnlyRootFilesystem") is True, label
            assert (context.get("capabilities") or {}).get("drop") == ["ALL"], label
            assert not (context.get("capabilities") or {}).get("add"), label
            seccomp = effective(pod_spec, container, "seccompProfile") or {}
            assert seccomp.get("type") == "RuntimeDefault", label
            assert pod_spec.get("automountServiceAccountToken") is False, label
            for kind in ("requests", "limits"):
                assert set((container.get("resources") or {}).get(kind) or {}) >= {
                    "cpu",
                    "memory",
                }, f"{label}: {kind}"
            checked += 1
    assert checked >= 4 * 4, "fewer containers than the four pods of each scenario"


def test_processes_that_write_get_an_empty_dir_at_tmp(default_render: Rendered) -> None:
    """MLflow, training and the predictor write (downloads, plots, metrics files)."""
    for obj in default_render.objects:
        for where, pod_spec, container in containers_of(obj):
            if obj["kind"] == "Pod":  # the helm test pod writes nothing
                continue
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, where
            volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], where
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("HOME") == "/tmp", f"{where}: HOME must point to a writable folder"


def test_images_are_pinned_and_never_latest(rendered_scenarios: dict[str, Rendered]) -> None:
    for scenario, rendered in all_renders(rendered_scenarios):
        for where, _, container in (c for obj in rendered.objects for c in containers_of(obj)):
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name and tag and "/" not in tag, f"{scenario}: {where}: {image} has no tag"
            assert tag != "latest", f"{scenario}: {where}"
            assert container["imagePullPolicy"] == "IfNotPresent", f"{scenario}: {where}"


def test_the_image_tag_defaults_to_the_app_version_and_latest_is_refused(
    default_render: Rendered,
) -> None:
    images = {c["image"] for o in default_render.objects for _, _, c in containers_of(o)}
    assert images == {"kind.local/mlops-kserve:0.1.0"}
    with pytest.raises(helm.HelmValuesError, match="/image/tag"):
        render({"image": {"tag": "latest"}})


def test_no_secret_is_ever_rendered_and_credentials_come_from_secret_refs(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    for scenario, rendered in all_renders(rendered_scenarios):
        assert rendered.of_kind("Secret") == [], scenario
        # The names of credentials may appear (env names, Secret keys); a value may not.
        text = "\n".join(rendered.files.values()).lower()
        text = re.sub(r"name: mlflow_(auth_admin|tracking)_password|key: password", "", text)
        assert "password" not in text, scenario
        for where, _, container in (c for obj in rendered.objects for c in containers_of(obj)):
            for env in container.get("env", []):
                if CREDENTIAL_NAME.search(env["name"]):
                    assert "value" not in env, f"{scenario}: {where}: {env['name']} is literal"
                    assert "secretKeyRef" in env["valueFrom"], f"{scenario}: {where}"


def test_postgresql_and_s3_credentials_are_read_from_the_named_secrets(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    mlflow = rendered_scenarios["postgresql-s3"].one("Deployment", "-mlflow")
    container = mlflow["spec"]["template"]["spec"]["containers"][0]
    refs = {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container["env"]
        if "valueFrom" in e
    }
    assert refs == {
        "MLFLOW_BACKEND_STORE_URI": ("mlflow-postgresql", "uri"),
        "AWS_ACCESS_KEY_ID": ("mlflow-s3", "AWS_ACCESS_KEY_ID"),
        "AWS_SECRET_ACCESS_KEY": ("mlflow-s3", "AWS_SECRET_ACCESS_KEY"),
    }
    args = container["args"]
    assert not any(a.startswith("--backend-store-uri") for a in args), "URL must not be an arg"
    assert "--artifacts-destination=s3://mlflow/artifacts" in args
    assert rendered_scenarios["postgresql-s3"].of_kind("PersistentVolumeClaim") == []


def test_every_object_carries_the_standard_labels(rendered_scenarios: dict[str, Rendered]) -> None:
    for scenario, rendered in all_renders(rendered_scenarios):
        for obj in rendered.objects:
            labels = obj["metadata"].get("labels", {})
            assert labels.get("app.kubernetes.io/name") == "mlops", object_name(obj)
            assert labels.get("app.kubernetes.io/instance") == "mlops", object_name(obj)
            assert labels.get("app.kubernetes.io/managed-by") == "Helm", object_name(obj)
            assert labels.get("app.kubernetes.io/version") == "0.1.0", object_name(obj)
            assert labels.get("helm.sh/chart") == "mlops-0.1.0", object_name(obj)
            assert labels.get("app.kubernetes.io/component"), f"{scenario}: {object_name(obj)}"


def test_selectors_use_only_the_stable_labels_and_match_their_pods(
    default_render: Rendered,
) -> None:
    stable = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
    deployment = default_render.one("Deployment", "-mlflow")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert set(selector) == stable
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    service = default_render.one("Service", "-mlflow")
    assert service["spec"]["selector"] == selector
    port_names = {
        p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert service["spec"]["ports"][0]["targetPort"] in port_names


def test_the_rollout_tool_may_only_get_and_patch_this_inference_service(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    """get and patch on this InferenceService; its lock, a Lease named after it (create
    cannot be limited by name: RBAC sees none on a create)."""
    rendered = rendered_scenarios["canary"]
    [role] = rendered.of_kind("Role")
    name = rendered.one("InferenceService")["metadata"]["name"]
    assert role["rules"] == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "resourceNames": [name],
            "verbs": ["get", "patch"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [lease_name(name)],
            "verbs": ["get", "update", "delete"],
        },
    ]
    [binding] = rendered.of_kind("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    accounts = {a["metadata"]["name"]: a for a in rendered.of_kind("ServiceAccount")}
    [subject] = binding["subjects"]
    assert subject == {"kind": "ServiceAccount", "name": "mlops-rollout", "namespace": "mlops"}
    # The tool's own account mounts its token; the one the workloads run as does not.
    assert accounts["mlops-rollout"]["automountServiceAccountToken"] is True
    assert accounts["mlops"]["automountServiceAccountToken"] is False
    workloads = {pod_spec.get("serviceAccountName") for _, pod_spec, _ in all_pods(rendered)}
    assert "mlops-rollout" not in workloads


def test_the_rollout_rbac_is_off_by_default(default_render: Rendered) -> None:
    assert default_render.of_kind("Role") == []
    assert default_render.of_kind("RoleBinding") == []
    assert [a["metadata"]["name"] for a in default_render.of_kind("ServiceAccount")] == ["mlops"]


def all_pods(rendered: Rendered) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [found for obj in rendered.objects for found in containers_of(obj)]
