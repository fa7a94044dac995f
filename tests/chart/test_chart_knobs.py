"""The values platform teams set first: scheduling, labels, annotations, extra environment
and volumes for every workload; MLflow on an existing claim and behind an Ingress; the
InferenceService named from the release; the camelCase training settings (and the old
UPPER_SNAKE form for one more version); the `helm test` pod's own request script."""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest

from tests.chart.render import CHART_DIR, NAMESPACE, Rendered, render, scenario_values
from tests.support import REPO_ROOT

pytestmark = pytest.mark.chart

PLATFORM = scenario_values(CHART_DIR / "ci" / "platform-values.yaml")


@pytest.fixture(scope="module")
def platform(rendered_scenarios: dict[str, Rendered]) -> Rendered:
    return rendered_scenarios["platform"]


def pod_specs(rendered: Rendered) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each workload's (pod metadata, pod spec): MLflow, training, predictor, helm test."""
    mlflow = rendered.one("Deployment", "-mlflow")["spec"]["template"]
    job = rendered.one("Job")["spec"]["template"]
    predictor = rendered.one("InferenceService")["spec"]["predictor"]
    test = rendered.one("Pod", "-test-v2")
    return {
        "mlflow": (mlflow["metadata"], mlflow["spec"]),
        "training": (job["metadata"], job["spec"]),
        # KServe's PredictorSpec is the pod spec inline, with labels and annotations beside it.
        "predictor": (predictor, predictor),
        "tests": (test["metadata"], test["spec"]),
    }


def test_every_workload_runs_where_its_values_say(platform: Rendered) -> None:
    for workload, (metadata, spec) in pod_specs(platform).items():
        values = PLATFORM[workload]
        assert spec["nodeSelector"] == values["nodeSelector"], workload
        assert spec["tolerations"] == values["tolerations"], workload
        assert spec.get("affinity") == values.get("affinity"), workload
        assert metadata["labels"]["team"] == "ml-platform", workload
        for key, value in values.get("podAnnotations", {}).items():
            assert metadata["annotations"][key] == value, workload


def test_every_workload_takes_extra_env_and_volumes_after_the_chart_s_own(
    platform: Rendered,
) -> None:
    for workload, (_, spec) in pod_specs(platform).items():
        if workload == "tests":
            continue
        container = spec["containers"][0]  # the workload's own (MLflow's: the server)
        assert container["env"][-1] == {
            "name": "HTTPS_PROXY",
            "value": "http://proxy.example.com:3128",
        }
        assert [v["name"] for v in spec["volumes"]][-1] == "ca-bundle", workload
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["ca-bundle"]["mountPath"] == "/etc/ssl/company", workload
        assert mounts["tmp"]["mountPath"] == "/tmp", "the chart's own mounts stay"


def test_the_defaults_set_no_scheduling_constraint(default_render: Rendered) -> None:
    for workload, (_, spec) in pod_specs(default_render).items():
        assert not {"nodeSelector", "tolerations", "affinity"} & set(spec), workload


def test_pod_labels_never_replace_the_chart_s_own() -> None:
    """Selectors, the PodMonitor and the NetworkPolicy in front of MLflow rely on them."""
    clash = {"app.kubernetes.io/instance": "someone-else", "team": "ml"}
    rendered = render(
        {w: {"podLabels": clash} for w in ("mlflow", "training", "predictor", "tests")}
    )
    for workload, (metadata, _) in pod_specs(rendered).items():
        assert metadata["labels"]["app.kubernetes.io/instance"] == "mlops", workload
        assert metadata["labels"]["team"] == "ml", workload


def test_predictor_pod_annotations_add_to_knative_s_progress_deadline() -> None:
    rendered = render({"predictor": {"podAnnotations": {"example.com/owner": "ml"}}})
    annotations = rendered.one("InferenceService")["spec"]["predictor"]["annotations"]
    assert annotations == {
        "serving.knative.dev/progress-deadline": "20m",
        "example.com/owner": "ml",
    }


def test_an_existing_claim_replaces_the_chart_s_own(platform: Rendered) -> None:
    assert platform.of_kind("PersistentVolumeClaim") == []
    volumes = platform.one("Deployment", "-mlflow")["spec"]["template"]["spec"]["volumes"]
    data = next(v for v in volumes if v["name"] == "data")
    assert data["persistentVolumeClaim"] == {"claimName": "mlflow-restored"}


def test_the_mlflow_ingress_routes_its_hosts_and_mlflow_accepts_them(platform: Rendered) -> None:
    ingress = platform.one("Ingress", "-mlflow")
    service = platform.one("Service", "-mlflow")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "mlflow-tls", "hosts": ["mlflow.example.com"]}]
    [rule] = ingress["spec"]["rules"]
    [path] = rule["http"]["paths"]
    assert rule["host"] == "mlflow.example.com"
    assert path["backend"]["service"] == {
        "name": service["metadata"]["name"],
        "port": {"name": "http"},
    }
    assert path["backend"]["service"]["port"]["name"] in {
        p["name"] for p in service["spec"]["ports"]
    }
    args = platform.one("Deployment", "-mlflow")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    [allowed] = [a.split("=", 1)[1] for a in args if a.startswith("--allowed-hosts=")]
    assert "mlflow.example.com" in allowed.split(",")
    # The NetworkPolicy lets the ingress controller's namespace through to MLflow.
    policy = platform.one("NetworkPolicy", "-mlflow")
    sources = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    selector = PLATFORM["mlflow"].get("ingress", {}).get("controllerNamespaceSelector") or {
        "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
    }
    assert {"namespaceSelector": selector} in sources
    assert "https://mlflow.example.com" in platform.notes


def test_no_ingress_and_no_controller_rule_by_default(default_render: Rendered) -> None:
    assert default_render.of_kind("Ingress") == []
    policy = default_render.one("NetworkPolicy", "-mlflow")
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    } not in peers


def test_an_ingress_without_hosts_fails_with_a_reason() -> None:
    with pytest.raises(helm.HelmRenderError, match="needs at least one host name"):
        render({"mlflow": {"ingress": {"enabled": True}}})


# --- the InferenceService's name --------------------------------------------------------


def isvc_references(rendered: Rendered) -> dict[str, str]:
    """Every place that names the InferenceService, by where."""
    isvc = rendered.one("InferenceService")["metadata"]["name"]
    monitor = rendered.one("PodMonitor", "-predictor")["spec"]["selector"]["matchLabels"]
    peers = rendered.one("NetworkPolicy", "-mlflow")["spec"]["ingress"][0]["from"]
    [policy] = [
        p for p in peers if "serving.kserve.io/inferenceservice" in p["podSelector"]["matchLabels"]
    ]
    test_env = {
        e["name"]: e["value"]
        for e in rendered.one("Pod", "-test-v2")["spec"]["containers"][0]["env"]
    }
    url = re.fullmatch(r"http://(.+)-predictor\.\S+", test_env["PREDICTOR_URL"])
    assert url, test_env["PREDICTOR_URL"]
    found = {
        "isvc": isvc,
        "podmonitor": monitor["serving.kserve.io/inferenceservice"],
        "networkpolicy": policy["podSelector"]["matchLabels"]["serving.kserve.io/inferenceservice"],
        "helm test": url.group(1),
    }
    roles = rendered.of_kind("Role")
    if roles:
        found["role"] = roles[0]["rules"][0]["resourceNames"][0]
    return found


def test_the_default_keeps_the_model_s_name_and_says_what_comes_next(
    default_render: Rendered,
) -> None:
    assert set(isvc_references(default_render).values()) == {"breast-cancer"}
    assert "set predictor.name=breast-cancer to keep this name" in default_render.notes
    assert "kubectl wait -n mlops inferenceservice/breast-cancer" in default_render.notes


def test_two_releases_in_one_namespace_do_not_collide() -> None:
    values = {"predictor": {"nameFromRelease": True}, "rollout": {"rbac": {"create": True}}}
    first, second = (render(values, release=name) for name in ("team-a", "team-b"))
    assert set(isvc_references(first).values()) == {"team-a-breast-cancer"}
    assert set(isvc_references(second).values()) == {"team-b-breast-cancer"}
    names = [{(o["kind"], o["metadata"]["name"]) for o in r.objects} for r in (first, second)]
    assert names[0] & names[1] == set(), "every object of a release has a name of its own"
    assert "inferenceservice/team-a-breast-cancer" in first.notes
    assert "set predictor.name" not in first.notes


def test_an_explicit_name_wins_and_a_release_named_after_the_model_is_not_repeated() -> None:
    named = render({"predictor": {"name": "cancer-api", "nameFromRelease": True}})
    assert set(isvc_references(named).values()) == {"cancer-api"}
    own = render({"predictor": {"nameFromRelease": True}}, release="breast-cancer")
    assert isvc_references(own)["isvc"] == "breast-cancer"


# --- training settings ------------------------------------------------------------------


def training_env(rendered: Rendered) -> dict[str, str]:
    [container] = rendered.one("Job")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_camel_case_settings_reach_the_package_under_its_upper_snake_names(
    platform: Rendered,
) -> None:
    env = training_env(platform)
    assert (env["SMOKE"], env["MAX_REGRESSION"], env["MAX_CV_RECALL_STD"], env["N_JOBS"]) == (
        "true",
        "0.01",
        "0.05",
        "1",
    )
    assert not any(re.search(r"[a-z]", name) for name in env), "no camelCase name leaks"
    assert "DEPRECATED" not in platform.notes


def test_the_old_upper_snake_settings_still_work_win_and_are_flagged() -> None:
    rendered = render({"training": {"settings": {"MAX_REGRESSION": 0.02, "SEED": 7}}})
    env = training_env(rendered)
    assert (env["MAX_REGRESSION"], env["SEED"]) == ("0.02", "7")
    assert list(env).count("MAX_REGRESSION") == 1
    assert "MAX_REGRESSION -> maxRegression, SEED -> seed" in rendered.notes
    assert "DEPRECATED: training.settings with UPPER_SNAKE keys" in rendered.notes


def test_a_misspelt_setting_is_refused_by_the_schema() -> None:
    with (
        helm.Chart.load(CHART_DIR) as chart,
        pytest.raises(helm.HelmValuesError, match="maxregresion"),
    ):
        chart.validate_schema({"training": {"settings": {"maxregresion": 0.1}}})


# --- helm test and NOTES ----------------------------------------------------------------


def test_the_helm_test_pod_runs_the_project_s_request_script_from_the_image(
    default_render: Rendered,
) -> None:
    [container] = default_render.one("Pod", "-test-v2")["spec"]["containers"]
    assert container["command"] == ["python", "/opt/mlops/v2_request.py"]
    assert container["args"] == ["--url", "$(PREDICTOR_URL)", "--model", "$(MODEL_NAME)"]
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "COPY scripts/v2_request.py /opt/mlops/v2_request.py" in dockerfile
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert "!scripts/v2_request.py" in ignore, "the build context must hold the script"


def kourier_forward(text: str) -> str:
    match = re.search(r"kubectl -n kourier-system port-forward svc/kourier \d+:80", text)
    assert match, "no Kourier port-forward"
    return match.group(0)


def test_notes_and_the_docs_forward_kourier_the_same_way(default_render: Rendered) -> None:
    docs = (REPO_ROOT / "docs" / "kubernetes.md").read_text()
    assert kourier_forward(default_render.notes) == kourier_forward(docs)
    port = kourier_forward(docs).rsplit(" ", 1)[1].split(":")[0]
    assert f"http://127.0.0.1:{port}/v2/models/" in default_render.notes
    assert NAMESPACE in default_render.notes
