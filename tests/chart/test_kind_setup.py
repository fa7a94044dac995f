"""The kind path below the cluster: pinned versions that agree with each other, Makefile
targets that parse, scripts that parse, settings that match the chart's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import semver
import yaml

from tests.chart.render import Rendered, render
from tests.chart.validation import containers_of
from tests.support import REPO_ROOT

pytestmark = pytest.mark.chart

MAKEFILE = (REPO_ROOT / "Makefile").read_text()
SCRIPTS = sorted((REPO_ROOT / "scripts").glob("*.sh"))
PROMETHEUS_VALUES = REPO_ROOT / "scripts" / "kind" / "kube-prometheus-stack-values.yaml"
KIND_TARGETS = ["kind-up", "images", "deploy", "train", "smoke", "kind-down", "container-check"]


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
    # A CSV's signature declares one V2 input per column: one zero each.
    columns = [{"name": "age", "shape": [-1]}, {"name": "dose", "shape": [-1]}]
    assert v2_request.request_body({"inputs": columns})["inputs"] == [
        {"name": "age", "shape": [1], "datatype": "FP64", "data": [0.0]},
        {"name": "dose", "shape": [1], "datatype": "FP64", "data": [0.0]},
    ]


# The Kubernetes version a client-only `helm template` assumes (`.Capabilities.KubeVersion`
# and the `kubeVersion` check) when no `--kube-version` is given: Helm's Makefile sets
# chartutil's k8sVersionMajor/Minor at build time from its go.mod's k8s.io/client-go
# (v0.M.x gives v1.M.0; helm/helm Makefile and pkg/chartutil/capabilities.go), and each
# minor release is built against one client (Helm's version-skew table; go.mod of v3.16:
# client-go v0.31.1). helm-python-sdk does not apply the check, so it is done here.
HELM_DEFAULT_KUBE_VERSION = {
    (3, 16): "1.31.0",
    (3, 17): "1.32.0",
    (3, 18): "1.33.0",
    (3, 19): "1.34.0",
    (3, 20): "1.35.0",
}
WORKFLOW = REPO_ROOT / ".github" / "workflows" / "e2e.yml"


def satisfies(version: str, constraint: str) -> bool:
    """Masterminds-style constraint (Helm's): `||` between alternatives, `,` or space within."""
    parsed = semver.Version.parse(version.lstrip("v"))
    alternatives = [part.replace(",", " ").split() for part in constraint.split("||")]
    return any(all(parsed.match(term) for term in terms) for terms in alternatives)


def documented_minimum_helm() -> tuple[int, int]:
    """The `| Helm | vX.Y or newer ... |` row of the prerequisites (README or docs/)."""
    found = set()
    for doc in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]:
        for major, minor in re.findall(
            r"^\| Helm \| v(\d+)\.(\d+) or newer\b", doc.read_text(), re.M
        ):
            found.add((int(major), int(minor)))
    assert len(found) == 1, f"expected one documented minimum Helm version, found {found}"
    return found.pop()


def ci_pinned_helm() -> tuple[int, int]:
    env = yaml.safe_load(WORKFLOW.read_text())["jobs"]["e2e"]["env"]
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", env["HELM_VERSION"])
    assert match, f"the e2e workflow's HELM_VERSION {env['HELM_VERSION']} is not pinned"
    return int(match.group(1)), int(match.group(2))


def test_the_constraint_check_refuses_what_helm_refuses() -> None:
    # Helm 3.16's default (v1.31.0) against `>=1.33.0-0`: the refusal that broke `make train`.
    constraint = yaml.safe_load((REPO_ROOT / "charts/mlops/Chart.yaml").read_text())["kubeVersion"]
    assert not satisfies(HELM_DEFAULT_KUBE_VERSION[(3, 16)], constraint)
    assert satisfies("v1.34.1-eks-2a3b4c", constraint)  # a provider's build of a newer minor
    assert not satisfies("1.40.0", ">=1.33.0-0 <1.36.0-0")
    assert satisfies("1.20.0", ">=1.33.0-0 || 1.20.0")


@pytest.mark.parametrize("which", ["documented minimum", "CI pin"])
def test_client_only_helm_template_accepts_the_chart(which: str) -> None:
    helm = documented_minimum_helm() if which == "documented minimum" else ci_pinned_helm()
    assert helm in HELM_DEFAULT_KUBE_VERSION, f"add Helm {helm}'s default Kubernetes version"
    default = HELM_DEFAULT_KUBE_VERSION[helm]
    constraint = yaml.safe_load((REPO_ROOT / "charts/mlops/Chart.yaml").read_text())["kubeVersion"]
    assert satisfies(default, constraint), (
        f"Helm {helm[0]}.{helm[1]} ({which}) assumes Kubernetes {default} without a cluster,"
        f" which the chart's kubeVersion {constraint!r} refuses: `helm template` would fail"
    )
    # And the chart renders for that Kubernetes with Helm's engine.
    assert render({}, kube_version=default).objects


@pytest.mark.parametrize("extra", ["", "-f tests/e2e/flipped-values.yaml"])
def test_make_train_renders_for_the_cluster_s_kubernetes_version(
    tmp_path: Path, extra: str
) -> None:
    env, log = recording_tools(
        tmp_path,
        {
            "get --raw /version": '{"major": "1", "minor": "34", "gitVersion": "v1.34.0"}',
            "create -f -": "job.batch/mlops-train-1",
            "get job.batch/mlops-train-1": "Complete ",
            "logs": '{"status": "registered", "version": "2"}',
        },
    )
    settings = {
        "RELEASE": "mlops",
        "NAMESPACE": "mlops",
        "KUBE_CONTEXT": "kind-mlops",
        # The e2e tier's flipped-label run (tests/e2e/flipped.py) adds its values file.
        "TRAIN_HELM_ARGS": extra,
    }
    done = subprocess.run(
        ["bash", "scripts/kind-train.sh"],
        cwd=REPO_ROOT,
        env={**env, **settings},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [template] = [line for line in log.read_text().splitlines() if " template " in line]
    assert "--kube-version v1.34.0 " in template, template
    # After the release's own values, so the extra file wins; nothing when empty.
    assert f"v1.34.0 {extra} --set training.enabled=true ".replace("  ", " ") in template


# The keys Knative Serving reads from config-features (knative/serving
# pkg/apis/config/features.go, NewFeaturesConfigFromMap, v1.21); any other key is ignored.
KNATIVE_FEATURE_KEYS = {
    "multi-container",
    "multi-container-probing",
    "kubernetes.podspec-affinity",
    "kubernetes.podspec-topologyspreadconstraints",
    "kubernetes.podspec-dryrun",
    "kubernetes.podspec-hostaliases",
    "kubernetes.podspec-fieldref",
    "kubernetes.podspec-nodeselector",
    "kubernetes.podspec-runtimeclassname",
    "kubernetes.podspec-securitycontext",
    "kubernetes.podspec-shareprocessnamespace",
    "kubernetes.podspec-hostipc",
    "kubernetes.podspec-priorityclassname",
    "kubernetes.podspec-schedulername",
    "kubernetes.containerspec-addcapabilities",
    "kubernetes.podspec-tolerations",
    "kubernetes.podspec-volumes-emptydir",
    "kubernetes.podspec-volumes-hostpath",
    "kubernetes.podspec-hostpid",
    "kubernetes.podspec-hostnetwork",
    "kubernetes.podspec-init-containers",
    "kubernetes.podspec-persistent-volume-claim",
    "kubernetes.podspec-persistent-volume-write",
    "kubernetes.podspec-dnspolicy",
    "kubernetes.podspec-dnsconfig",
    "secure-pod-defaults",
    "tag-header-based-routing",
    "queueproxy.resource-defaults",
    "queueproxy.mount-podinfo",
    "autodetect-http2",
}


def test_knative_features_are_keys_knative_reads(default_render: Rendered) -> None:
    features = yaml.safe_load(
        (REPO_ROOT / "manifests/cluster/knative-config-features.yaml").read_text()
    )
    keys = set(features["data"])
    assert keys <= KNATIVE_FEATURE_KEYS, f"Knative ignores {sorted(keys - KNATIVE_FEATURE_KEYS)}"
    # The predictor's pod needs both: a pod securityContext and the /tmp emptyDir.
    predictor = default_render.one("InferenceService")["spec"]["predictor"]
    assert predictor["securityContext"] and any("emptyDir" in v for v in predictor["volumes"])
    assert features["data"]["kubernetes.podspec-securitycontext"] == "enabled"
    assert features["data"]["kubernetes.podspec-volumes-emptydir"] == "enabled"


def recording_tools(folder: Path, answers: dict[str, str]) -> tuple[dict[str, str], Path]:
    """kind, kubectl, helm and docker as scripts that log each call and print `answers`
    for calls containing a key (no cluster runs here); the environment that uses them."""
    log = folder / "calls.log"
    cases = "".join(f"  *{key!r}*) echo {value!r} ;;\n" for key, value in answers.items())
    for tool in ("kind", "kubectl", "helm", "docker"):
        stub = folder / tool
        stub.write_text(
            f'#!/usr/bin/env bash\necho "{tool} $*" >>{log}\ncase "$*" in\n{cases}esac\n'
        )
        stub.chmod(0o755)
    env = {"PATH": f"{folder}:/usr/bin:/bin", "KIND": "kind", "KUBECTL": "kubectl", "HELM": "helm"}
    return env, log


def test_kind_up_waits_for_knative_s_webhook_before_applying_its_config(tmp_path: Path) -> None:
    env, log = recording_tools(tmp_path, {"get clusters": "mlops"})
    settings = {
        name: make_setting(name)
        for name in (
            "KIND_NODE_IMAGE",
            "CERT_MANAGER_VERSION",
            "KNATIVE_VERSION",
            "KOURIER_VERSION",
            "KSERVE_VERSION",
            "KUBE_PROMETHEUS_STACK_VERSION",
        )
    }
    done = subprocess.run(
        ["bash", "scripts/kind-up.sh"],
        cwd=REPO_ROOT,
        env={**env, **settings, "CLUSTER_NAME": "mlops"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    webhook = next(
        i for i, c in enumerate(calls) if "-n knative-serving wait deployment/webhook" in c
    )
    config = next(i for i, c in enumerate(calls) if "apply" in c and "manifests/cluster/" in c)
    core = next(i for i, c in enumerate(calls) if "serving-core.yaml" in c)
    assert core < webhook < config, calls
    assert "--for=condition=Available" in calls[webhook]


def test_documented_helm_upgrades_do_not_use_reuse_values() -> None:
    # With --reuse-values Helm renders against the old release's merged values, so
    # `--set predictor.canaryTrafficPercent=null` leaves the old percent in the manifest the
    # first time (Helm issue #30765; `reuseValues` in pkg/action/upgrade.go).
    places = [
        REPO_ROOT / "README.md",
        REPO_ROOT / "charts/mlops/README.md",
        REPO_ROOT / "charts/mlops/templates/NOTES.txt",
        REPO_ROOT / "tests/e2e/test_kind.py",
        *sorted((REPO_ROOT / "docs").glob("*.md")),
        *SCRIPTS,
    ]
    upgrades = 0
    for path in places:
        text = path.read_text()
        # As a flag in a command: followed by a flag, a line continuation or a closing quote.
        used = re.search(r"--reuse-values(\s+--|\s*\\|\")", text)
        assert not used, f"{path.name} uses --reuse-values"
        upgrades += text.count("--reset-then-reuse-values")
    assert upgrades >= 8


def test_the_documented_rollback_restores_stable_before_dropping_the_canary_field(
    default_render: Rendered,
) -> None:
    for text in (default_render.notes, (REPO_ROOT / "charts/mlops/README.md").read_text()):
        start = text.index("anaryTrafficPercent=0\n")  # the rollback's first step
        lines = (line.strip() for line in text[start:].splitlines())
        steps = [line for line in lines if line.startswith(("helm ", "$H ", "kubectl "))]
        restore = next(i for i, s in enumerate(steps) if "modelVersion=" in s)
        assert "canaryTrafficPercent=0" in steps[restore], steps[restore]
        assert "wait" in steps[restore + 1] and "canaryTrafficPercent=null" in steps[restore + 2]


def cpu_millis(quantity: str | int | float) -> int:
    text = str(quantity)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def test_the_kind_profile_fits_the_e2e_s_busiest_moment_into_a_quarter_of_the_node() -> None:
    # The busiest moment of tests/e2e: a rollback's restored revision starting beside the
    # stable and the rejected one (three predictor pods), while MLflow runs; a training Job
    # and `helm test` at once. Each predictor pod has Knative's queue-proxy beside it,
    # which requests 25m by default (config-deployment `queue-sidecar-cpu-request`).
    assert "-f $(KIND_VALUES)" in MAKEFILE
    profile = yaml.safe_load((REPO_ROOT / make_setting("KIND_VALUES")).read_text())
    rendered = render(
        {**profile, "predictor": {**profile["predictor"], "canaryTrafficPercent": 10}}
    )

    def requests(obj: dict[str, Any]) -> int:
        return sum(cpu_millis(c["resources"]["requests"]["cpu"]) for _, _, c in containers_of(obj))

    peak = (
        requests(rendered.one("Deployment", "-mlflow"))
        + requests(rendered.one("Job"))
        + requests(rendered.one("Pod"))
        + 3 * (requests(rendered.one("InferenceService")) + 25)
    )
    # Knative, KServe, cert-manager, kube-prometheus-stack and kind's control plane request
    # about 2.3 CPUs of the node's 4 on their own: the chart may take one at its busiest.
    assert peak <= 1000, f"the chart requests {peak}m CPU at the e2e's busiest moment"
    default = render({"predictor": {"canaryTrafficPercent": 10}})
    assert requests(default.one("InferenceService")) > requests(rendered.one("InferenceService"))
