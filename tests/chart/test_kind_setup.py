"""The kind path below the cluster: pinned versions that agree with each other, Makefile
targets that parse, scripts that parse, settings that match the chart's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.render import Rendered
from tests.support import REPO_ROOT

pytestmark = pytest.mark.chart

MAKEFILE = (REPO_ROOT / "Makefile").read_text()
SCRIPTS = sorted((REPO_ROOT / "scripts").glob("*.sh"))
PROMETHEUS_VALUES = REPO_ROOT / "scripts" / "kind" / "kube-prometheus-stack-values.yaml"
KIND_TARGETS = ["kind-up", "images", "deploy", "train", "smoke", "kind-down", "image-check"]


def make_setting(name: str) -> str:
    match = re.search(rf"^{name} \?= (.+)$", MAKEFILE, flags=re.MULTILINE)
    assert match, f"the Makefile has no overridable {name}"
    return match.group(1).strip()


def test_every_version_kind_up_installs_is_pinned_and_overridable() -> None:
    versions = {
        name: make_setting(name)
        for name in (
            "CERT_MANAGER_VERSION",
            "KNATIVE_VERSION",
            "KOURIER_VERSION",
            "KSERVE_VERSION",
            "KUBE_PROMETHEUS_STACK_VERSION",
        )
    }
    for name, version in versions.items():
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", version), f"{name}={version} is not pinned"
    # KServe 0.21 to match the kserve SDK the tests validate the InferenceService with.
    assert versions["KSERVE_VERSION"] == "v0.21.0"
    # Knative's networking layer is released with Serving: the same minor version.
    assert versions["KOURIER_VERSION"].split(".")[:2] == versions["KNATIVE_VERSION"].split(".")[:2]


def test_the_kind_node_image_is_pinned_by_digest_in_one_version() -> None:
    config = yaml.safe_load((REPO_ROOT / "kind-config.yaml").read_text())
    [node] = config["nodes"]
    assert node["image"] == make_setting("KIND_NODE_IMAGE")
    assert re.fullmatch(r"kindest/node:v1\.(\d+)\.\d+@sha256:[0-9a-f]{64}", node["image"])
    minor = int(re.search(r"v1\.(\d+)", node["image"]).group(1))  # type: ignore[union-attr]
    chart = yaml.safe_load((REPO_ROOT / "charts/mlops/Chart.yaml").read_text())
    lowest = int(re.search(r">=\s*1\.(\d+)", chart["kubeVersion"]).group(1))  # type: ignore[union-attr]
    assert minor >= lowest, "the kind node must run a Kubernetes the chart supports"


def test_the_image_tag_is_the_chart_s_app_version() -> None:
    version = re.search(r'^version = "(.+)"$', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    chart = yaml.safe_load((REPO_ROOT / "charts/mlops/Chart.yaml").read_text())
    assert version and version.group(1) == chart["appVersion"]
    values = yaml.safe_load((REPO_ROOT / "charts/mlops/values.yaml").read_text())
    assert make_setting("IMAGE_REPO") == values["image"]["repository"]


def test_make_help_lists_the_kind_targets_and_they_parse() -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listed = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)  # colours off
    assert "Cluster (kind)" in listed
    targets = set(re.findall(r"^  (\S+) ", listed, flags=re.MULTILINE))
    assert set(KIND_TARGETS) <= targets
    # A dry run expands every recipe: no syntax error, no undefined setting.
    dry = subprocess.run(
        ["make", "-n", *KIND_TARGETS], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert dry.returncode == 0, dry.stderr
    assert "scripts/kind-up.sh" in dry.stdout
    assert "upgrade --install mlops charts/mlops" in dry.stdout
    assert "load docker-image kind.local/mlops-kserve:0.1.0 --name mlops" in dry.stdout


def test_settings_on_the_command_line_reach_the_recipes() -> None:
    dry = subprocess.run(
        ["make", "-n", "deploy", "kind-down", "NAMESPACE=ml", "CLUSTER_NAME=dev", "IMAGE_TAG=9"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    assert "--kube-context kind-dev" in dry.stdout
    assert "--namespace ml" in dry.stdout
    assert "--set-string image.tag=9" in dry.stdout
    assert "delete cluster --name dev" in dry.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_shell_scripts_parse_and_are_strict(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert script.stat().st_mode & 0o111, f"{script.name} is not executable"


def test_prometheus_and_grafana_pick_up_the_chart_s_objects(default_render: Rendered) -> None:
    values: dict[str, Any] = yaml.safe_load(PROMETHEUS_VALUES.read_text())
    spec = values["prometheus"]["prometheusSpec"]
    # Without these, kube-prometheus-stack only selects objects labelled with its release.
    assert spec["podMonitorSelectorNilUsesHelmValues"] is False
    assert spec["ruleSelectorNilUsesHelmValues"] is False
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    dashboard_labels = default_render.one("ConfigMap", "-dashboard")["metadata"]["labels"]
    assert dashboard_labels[sidecar["label"]] == sidecar["labelValue"]
    assert sidecar["searchNamespace"] == "ALL"


def test_kind_up_installs_monitoring_where_the_network_policy_expects_it(
    default_render: Rendered,
) -> None:
    kind_up = (REPO_ROOT / "scripts" / "kind-up.sh").read_text()
    namespace = re.search(r"charts/kube-prometheus-stack.*?--namespace (\S+)", kind_up, re.S)
    assert namespace
    policy = default_render.one("NetworkPolicy")
    selector = policy["spec"]["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"]
    assert selector == {"kubernetes.io/metadata.name": namespace.group(1)}
    assert "manifests/cluster/" in kind_up
    assert "deploymentMode=Knative" in kind_up


def test_the_smoke_request_uses_real_rows_for_breast_cancer_and_zeros_otherwise() -> None:
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import v2_request
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    body = v2_request.request_body({"inputs": [{"name": "features", "shape": [-1, 30]}]})
    [tensor] = body["inputs"]
    assert (tensor["name"], tensor["shape"], tensor["datatype"]) == ("features", [2, 30], "FP64")
    assert tensor["data"][:2] == [17.99, 10.38]
    body = v2_request.request_body({"inputs": [{"name": "x", "shape": [-1, 4]}]})
    assert body["inputs"][0]["data"] == [0.0] * 4
