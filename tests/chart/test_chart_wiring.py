"""What the parts rely on: canary wiring, the predictor contract, the training settings,
MLflow's arguments, who may reach MLflow, what Prometheus scrapes, and NOTES that work."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from typing import Any

import helm_python as helm
import pytest

from tests.chart.render import CHART_DIR, NAMESPACE, RELEASE, Rendered, render, scenario_values

pytestmark = pytest.mark.chart


def predictor_of(rendered: Rendered) -> dict[str, Any]:
    return rendered.one("InferenceService")["spec"]["predictor"]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


# --- canary ---------------------------------------------------------------------------


def test_canary_is_absent_unless_set(default_render: Rendered) -> None:
    predictor = predictor_of(default_render)
    assert "canaryTrafficPercent" not in predictor
    env = env_of(predictor["containers"][0])
    assert env["MODEL_URI"] == "models:/breast-cancer@champion"


def test_canary_scenario_sends_ten_percent_to_a_pinned_version(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    predictor = predictor_of(rendered_scenarios["canary"])
    assert predictor["canaryTrafficPercent"] == 10
    assert env_of(predictor["containers"][0])["MODEL_URI"] == "models:/breast-cancer/2"


@pytest.mark.parametrize(
    ("set_flags", "percent", "model_uri"),
    [
        # what `helm upgrade --reset-then-reuse-values --set ...` sends for each step of a rollout
        (
            "predictor.modelVersion=7,predictor.canaryTrafficPercent=10",
            10,
            "models:/breast-cancer/7",
        ),
        ("predictor.modelVersion=7,predictor.canaryTrafficPercent=0", 0, "models:/breast-cancer/7"),
        (
            "predictor.modelVersion=7,predictor.canaryTrafficPercent=null",
            None,
            "models:/breast-cancer/7",
        ),
        (
            "predictor.modelUri=models:/breast-cancer@challenger",
            None,
            "models:/breast-cancer@challenger",
        ),
    ],
)
def test_helm_set_flags_drive_the_canary(
    set_flags: str, percent: int | None, model_uri: str
) -> None:
    predictor = predictor_of(render(helm.parse_set_string(set_flags)))
    assert predictor.get("canaryTrafficPercent") == percent
    assert ("canaryTrafficPercent" in predictor) is (percent is not None)
    assert env_of(predictor["containers"][0])["MODEL_URI"] == model_uri


def test_a_pinned_version_wins_over_the_uri() -> None:
    predictor = predictor_of(
        render({"predictor": {"modelVersion": 3, "modelUri": "models:/breast-cancer@champion"}})
    )
    assert env_of(predictor["containers"][0])["MODEL_URI"] == "models:/breast-cancer/3"


# --- the predictor contract ------------------------------------------------------------


def test_the_inference_service_runs_the_custom_predictor_in_knative_mode(
    default_render: Rendered,
) -> None:
    isvc = default_render.one("InferenceService")
    assert isvc["metadata"]["name"] == "breast-cancer"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 1)
    [container] = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["command"] == ["python", "-m", "serving"]
    assert container["args"][:2] == ["--http_port=8080", "--grpc_port=8081"]
    # Knative: one port, named for its protocol.
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    env = env_of(container)
    assert env["MODEL_NAME"] == "breast-cancer"
    assert (env["MAX_BATCH_SIZE"], env["MAX_BODY_BYTES"]) == ("1024", "4194304")
    mlflow_service = default_render.one("Service", "-mlflow")
    assert env["MLFLOW_TRACKING_URI"] == (
        f"http://{mlflow_service['metadata']['name']}:{mlflow_service['spec']['ports'][0]['port']}"
    )
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}


def test_the_predictor_s_arguments_and_environment_parse_into_its_settings(
    default_render: Rendered,
) -> None:
    """The container's args and env, parsed by the serving package's own parser."""
    settings_module = pytest.importorskip("serving.settings")
    model_server = pytest.importorskip("kserve.model_server")
    container = predictor_of(default_render)["containers"][0]
    env = env_of(container)
    parser = settings_module.add_arguments(
        argparse.ArgumentParser(parents=[model_server.parser]), env
    )
    helps = " ".join(action.help or "" for action in parser._actions)
    read_by_package = set(re.findall(r"\(env (\w+)", helps)) | {"MODEL_NAME"}
    # HOME and MLflow's own switch are read by the libraries, not by the package's parser.
    assert set(env) - {"HOME", "MLFLOW_DISABLE_TELEMETRY"} <= read_by_package
    settings = settings_module.settings_from_args(parser.parse_args(container["args"]))
    assert settings.model_uri == "models:/breast-cancer@champion"
    assert settings.tracking_uri == "http://mlops-mlflow:5000"
    assert settings.model_name == "breast-cancer"
    assert (settings.http_port, settings.grpc_port) == (8080, 8081)
    assert (settings.max_batch_size, settings.max_body_bytes) == (1024, 4194304)
    assert settings.model_runtime == "auto"


def test_predictor_pods_carry_the_labels_the_network_policy_admits(
    default_render: Rendered,
) -> None:
    policy = default_render.one("NetworkPolicy")
    peers = [peer["podSelector"]["matchLabels"] for peer in policy["spec"]["ingress"][0]["from"]]
    predictor_labels = predictor_of(default_render)["labels"]
    training_labels = default_render.one("Job")["spec"]["template"]["metadata"]["labels"]
    test_labels = default_render.one("Pod")["metadata"]["labels"]
    for labels in (predictor_labels, training_labels):
        assert any(matches(peer, labels) for peer in peers), labels
    # The rollout controller moves @champion: it reaches MLflow too (and logs in as the
    # admin when mlflow.auth is on).
    controller = render(
        {
            "rollout": {"controller": {"enabled": True}},
            **scenario_values(CHART_DIR / "ci/hardened-values.yaml"),
        }
    )
    pod = controller.one("Deployment", "-rollout-controller")["spec"]["template"]
    assert any(matches(peer, pod["metadata"]["labels"]) for peer in peers)
    env = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= env
    # The `helm test` pod talks to the predictor only: it does not reach MLflow.
    assert not any(matches(peer, test_labels) for peer in peers), test_labels
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    # KServe's own label on predictor pods is admitted too, and nothing else is.
    assert any(matches(p, {"serving.kserve.io/inferenceservice": "breast-cancer"}) for p in peers)
    assert not any(matches(p, {"app.kubernetes.io/name": "other"}) for p in peers)
    mlflow_pod = default_render.one("Deployment", "-mlflow")["spec"]["template"]["metadata"]
    assert matches(policy["spec"]["podSelector"]["matchLabels"], mlflow_pod["labels"])


def test_prometheus_may_scrape_mlflow_only_when_it_is_there(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    rules = rendered_scenarios["default"].one("NetworkPolicy")["spec"]["ingress"]
    assert rules[1]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    # The metrics sidecar's port only: Prometheus never reaches MLflow's API.
    assert rules[1]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert len(rendered_scenarios["monitoring-off"].one("NetworkPolicy")["spec"]["ingress"]) == 1


# --- the training Job ------------------------------------------------------------------


def test_the_training_job_has_its_bounds_and_runs_once_as_a_hook(default_render: Rendered) -> None:
    job = default_render.one("Job")
    assert job["metadata"]["name"] == "mlops-train"
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install"
    spec = job["spec"]
    assert (
        spec["backoffLimit"],
        spec["activeDeadlineSeconds"],
        spec["ttlSecondsAfterFinished"],
    ) == (
        2,
        1800,
        86400,
    )
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    [rule] = spec["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"] == {"containerName": "training", "operator": "In", "values": [2, 3]}
    assert spec["template"]["spec"]["containers"][0]["command"] == ["python", "-m", "training"]


def test_make_train_renders_a_plain_job_with_its_own_name() -> None:
    job = render({"training": {"runSuffix": "20260101120000"}}).one("Job")
    assert job["metadata"]["name"] == "mlops-train-20260101120000"
    assert "annotations" not in job["metadata"]


def test_every_retry_of_the_job_shares_its_identity(default_render: Rendered) -> None:
    """Kubernetes labels every pod of one Job with the Job's uid: a retry (backoffLimit)
    sees the same TRAINING_JOB_UID, another Job another one (docs/training.md)."""
    [container] = default_render.one("Job")["spec"]["template"]["spec"]["containers"]
    [uid] = [e for e in container["env"] if e["name"] == "TRAINING_JOB_UID"]
    assert uid["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/controller-uid']"}
    }


def test_every_training_setting_reaches_the_package_under_its_own_name(
    default_render: Rendered,
) -> None:
    """The Job's environment, parsed by the training package's own parser."""
    settings_module = pytest.importorskip("training.settings")
    env = env_of(default_render.one("Job")["spec"]["template"]["spec"]["containers"][0])
    parser = settings_module.build_parser(env)
    helps = " ".join(action.help or "" for action in parser._actions)
    read_by_package = set(re.findall(r"\(env (\w+)", helps))
    # camelCase values, the package's UPPER_SNAKE names: `maxCvRecallStd` is MAX_CV_RECALL_STD.
    chart_settings = {
        re.sub(r"(?<!^)(?=[A-Z])", "_", key).upper()
        for key in default_render.values["training"]["settings"]
    }
    fixed = {"MLFLOW_TRACKING_URI", "MODEL_NAME", "TRAINING_JOB_UID"}
    assert chart_settings | fixed == read_by_package
    settings = settings_module.settings_from_args(parser.parse_args([]))
    assert settings.tracking_uri == "http://mlops-mlflow:5000"
    assert settings.model_name == "breast-cancer"
    assert (settings.seed, settings.cv_folds, settings.smoke) == (42, 5, False)
    assert (settings.min_malignant_recall, settings.max_cv_recall_std) == (0.95, 0.05)
    assert settings.candidates == ("logreg", "random_forest", "hist_gradient_boosting")
    assert settings.registry_timeout == 300


def test_changed_training_values_change_the_settings_the_package_sees() -> None:
    settings_module = pytest.importorskip("training.settings")
    rendered = render(
        {"training": {"settings": {"smoke": True, "seed": 7, "candidates": "logreg"}}}
    )
    env = env_of(rendered.one("Job")["spec"]["template"]["spec"]["containers"][0])
    parser = settings_module.build_parser(env)
    settings = settings_module.settings_from_args(parser.parse_args([]))
    assert (settings.smoke, settings.seed, settings.candidates) == (True, 7, ("logreg",))


# --- MLflow ----------------------------------------------------------------------------


def test_mlflow_serves_artifacts_exposes_metrics_and_accepts_its_service_names(
    default_render: Rendered,
) -> None:
    container = default_render.one("Deployment", "-mlflow")["spec"]["template"]["spec"][
        "containers"
    ][0]
    args = container["args"]
    assert container["command"] == ["mlflow", "server"]
    assert "--serve-artifacts" in args
    assert "--backend-store-uri=sqlite:////mlflow/mlflow.db" in args
    assert "--artifacts-destination=/mlflow/artifacts" in args
    assert "--expose-prometheus=/tmp/prometheus" in args
    hosts = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert {
        "mlops-mlflow",
        "mlops-mlflow:*",
        "mlops-mlflow.mlops.svc*",
        "127.0.0.1:*",
        "10.*",
    } <= set(hosts)
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {
        v["name"]: v
        for v in default_render.one("Deployment", "-mlflow")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes[mounts["/mlflow"]]["persistentVolumeClaim"]["claimName"] == "mlops-mlflow"
    assert default_render.one("PersistentVolumeClaim")["spec"]["resources"]["requests"] == {
        "storage": "2Gi"
    }


def test_without_persistence_mlflow_keeps_its_data_in_an_empty_dir() -> None:
    rendered = render({"mlflow": {"persistence": {"enabled": False}}})
    volumes = rendered.one("Deployment", "-mlflow")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "emptyDir": {}} in volumes
    assert rendered.of_kind("PersistentVolumeClaim") == []
    assert "WARNING: persistence is off" in rendered.notes


def test_an_external_mlflow_replaces_the_chart_s_own() -> None:
    rendered = render(
        {"mlflow": {"enabled": False, "externalTrackingUri": "http://mlflow.tools:5000"}}
    )
    assert not [o for o in rendered.objects if o["metadata"]["name"].endswith("-mlflow")]
    env = env_of(predictor_of(rendered)["containers"][0])
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.tools:5000"


# --- monitoring ------------------------------------------------------------------------


def test_pod_monitors_scrape_the_predictor_and_mlflow(default_render: Rendered) -> None:
    predictor_monitor = default_render.one("PodMonitor", "-predictor")
    assert predictor_monitor["spec"]["selector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": "breast-cancer"
    }
    [endpoint] = predictor_monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["portNumber"], endpoint["path"]) == (8080, "/metrics")
    assert "serving.knative.dev/revision" in predictor_monitor["spec"]["podTargetLabels"]
    mlflow_monitor = default_render.one("PodMonitor", "-mlflow")
    pod = default_render.one("Deployment", "-mlflow")["spec"]["template"]
    assert matches(mlflow_monitor["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    ports = {p["name"]: c["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
    # The metrics sidecar's port, not MLflow's API port.
    [endpoint] = mlflow_monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    assert ports["metrics"] == "metrics" and ports["http"] == "mlflow"


def test_alert_rules_select_the_predictor_pod_monitor_job(default_render: Rendered) -> None:
    rule = default_render.one("PrometheusRule")
    monitor = default_render.one("PodMonitor", "-predictor")["metadata"]["name"]
    text = json.dumps(rule)
    # Prometheus Operator names a PodMonitor's job `<namespace>/<name>`.
    assert f'job=\\"{NAMESPACE}/{monitor}\\"' in text
    assert 'namespace=\\"mlops\\", model_name=\\"breast-cancer\\"' in text


def test_monitoring_off_renders_no_operator_object(rendered_scenarios: dict[str, Rendered]) -> None:
    rendered = rendered_scenarios["monitoring-off"]
    assert [o for o in rendered.objects if "monitoring.coreos.com" in o["apiVersion"]] == []
    assert rendered.of_kind("ConfigMap") == []
    mlflow_args = rendered.one("Deployment", "-mlflow")["spec"]["template"]["spec"]["containers"][
        0
    ]["args"]
    assert not any(a.startswith("--expose-prometheus") for a in mlflow_args)


def test_the_dashboard_is_found_by_the_grafana_sidecar_and_shows_what_matters(
    default_render: Rendered,
) -> None:
    config_map = default_render.one("ConfigMap", "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["mlops-inference.json"])
    titles = " | ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in (
        "requests per second",
        "error ratio",
        "p50 and p99",
        "predicted-class",
        "canary vs stable",
        "served versions",
        "traffic share per version",
        "ready predictor pods",
        "by revision",
        "cpu per predictor pod",
        "memory per predictor pod",
        "restarts per predictor pod",
        "mlflow requests",
        "top drifting features per version",
    ):
        assert topic in titles, topic
    # The version rows split every query by model version (pod counts aside).
    rows: dict[str, list[dict[str, Any]]] = {}
    row = ""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
        else:
            rows.setdefault(row, []).append(panel)
    assert list(rows) == [
        "Now",
        "Stable vs canary",
        "Per Knative revision",
        "Predictor pods",
        "MLflow server",
    ]
    by_version = [
        target["expr"]
        for panel in rows["Now"] + rows["Stable vs canary"]
        if panel["title"] != "Ready predictor pods"
        for target in panel["targets"]
    ]
    assert all("model_version" in e for e in by_version), "every version panel splits by version"
    assert all(
        "serving_knative_dev_revision" in t["expr"]
        for p in rows["Per Knative revision"]
        for t in p["targets"]
    )
    # The drift panel: the top five features of each version, never of all versions.
    [drift] = [p for p in dashboard["panels"] if p["title"].startswith("Top drifting")]
    assert drift["targets"][0]["expr"].startswith(
        "topk by (model_version) (5, model_version:inference_feature_psi:rate30m{"
    )
    # Stacking would add the versions' shares (or rates) onto each other.
    stacked = [
        p["title"]
        for p in dashboard["panels"]
        if p["type"] == "timeseries"
        and p["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] != "none"
    ]
    assert stacked == []


# --- NOTES.txt -------------------------------------------------------------------------


def notes_commands(notes: str) -> list[list[str]]:
    commands = []
    for raw in notes.splitlines():
        line = raw.strip().rstrip("&").strip()
        if line.startswith("HOST=$("):
            line = line.removeprefix("HOST=$(").split(")", 1)[0]
        if line.startswith(("kubectl ", "helm ")):
            commands.append(shlex.split(line.replace("<N>", "2").replace("<STABLE>", "1")))
    return commands


def test_notes_commands_name_objects_the_chart_renders(default_render: Rendered) -> None:
    commands = notes_commands(default_render.notes)
    assert len(commands) >= 8
    rendered_names = {
        (o["kind"].lower(), o["metadata"]["name"]) for o in default_render.objects
    } | {("job", "mlops-train")}
    short = {"svc": "service", "job": "job", "inferenceservice": "inferenceservice"}
    for command in commands:
        if command[0] == "kubectl":
            namespace = command[command.index("-n") + 1]
            assert namespace in (NAMESPACE, "kourier-system"), command
            for word in command:
                kind, _, name = word.partition("/")
                if name and kind in short and namespace == NAMESPACE:
                    assert (short[kind], name) in rendered_names, command
            if "-l" in command:
                key, _, value = command[command.index("-l") + 1].partition("=")
                kinds = command[command.index(namespace) + 1].split(",")
                assert kinds, command
                assert all(
                    o["metadata"]["labels"].get(key) == value for o in default_render.objects
                ), command
        else:
            assert command[:2] in (["helm", "upgrade"], ["helm", "test"]), command
            assert command[2] == RELEASE
            if command[1] == "upgrade":
                assert command[3] == "charts/mlops"
                sets = [command[i + 1] for i, word in enumerate(command) if word == "--set"]
                render(helm.parse_set_string(",".join(sets)))  # the keys exist and validate


def test_notes_follow_the_values(rendered_scenarios: dict[str, Rendered]) -> None:
    canary_notes = rendered_scenarios["canary"].notes
    assert "serves models:/breast-cancer/2 as a canary with 10% of the traffic" in canary_notes
    assert "Monitoring:" not in rendered_scenarios["monitoring-off"].notes
    upgrade_notes = render({}, is_install=False, is_upgrade=True).notes
    assert "job/mlops-train" not in upgrade_notes


def test_the_predictor_network_policy_admits_knative_s_data_path_and_prometheus_only(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    assert [
        p["metadata"]["name"] for p in rendered_scenarios["default"].of_kind("NetworkPolicy")
    ] == ["mlops-mlflow"], "the predictor's policy is an option, off by default"
    rendered = rendered_scenarios["hardened"]
    policy = rendered.one("NetworkPolicy", "-predictor")
    # KServe's label on the predictor pods (of every revision).
    assert policy["spec"]["podSelector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": "breast-cancer"
    }
    serving, metrics = policy["spec"]["ingress"]
    assert [peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for peer in serving["from"]] == ["knative-serving", "kourier-system"]  # fmt: skip
    # The queue-proxy's ports (Knative pkg/networking), never the predictor's own 8080.
    assert sorted(p["port"] for p in serving["ports"]) == [8012, 8013, 8022, 9090]
    assert metrics["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert metrics["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    monitor = rendered.one("PodMonitor", "-predictor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["portNumber"] == 8080


def test_with_mlflow_auth_every_client_logs_in_and_only_from_secrets(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    rendered = rendered_scenarios["hardened"]
    mlflow = rendered.one("Deployment", "-mlflow")["spec"]["template"]["spec"]
    server = next(c for c in mlflow["containers"] if c["name"] == "mlflow")
    assert "--app-name=basic-auth" in server["args"]

    def secret_env(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
        return {
            e["name"]: (
                e["valueFrom"]["secretKeyRef"]["name"],
                e["valueFrom"]["secretKeyRef"]["key"],
            )
            for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }

    assert secret_env(server) == {
        "MLFLOW_AUTH_ADMIN_USERNAME": ("mlflow-admin", "username"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ("mlflow-admin", "password"),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": ("mlflow-admin", "flask-secret-key"),
    }
    [training] = rendered.one("Job")["spec"]["template"]["spec"]["containers"]
    assert secret_env(training) == {
        "MLFLOW_TRACKING_USERNAME": ("mlflow-admin", "username"),
        "MLFLOW_TRACKING_PASSWORD": ("mlflow-admin", "password"),
    }
    # The predictor reads the registry as the reader, never as the admin.
    assert secret_env(predictor_of(rendered)["containers"][0]) == {
        "MLFLOW_TRACKING_USERNAME": ("mlflow-reader", "username"),
        "MLFLOW_TRACKING_PASSWORD": ("mlflow-reader", "password"),
    }
    assert "Every request needs a user" in rendered.notes
    assert "Every request needs a user" not in rendered_scenarios["default"].notes
    ini = rendered.one("ConfigMap", "-auth")["data"]["basic_auth.ini"]
    assert "database_uri = sqlite:////mlflow/basic_auth.db" in ini
    assert "default_permission = READ" in ini
    with pytest.raises(helm.HelmError, match="existingSecret is required"):
        render({"mlflow": {"auth": {"enabled": True}}})


# --- MLflow's telemetry ------------------------------------------------------------------


def mlflow_code_containers(rendered: Rendered) -> dict[str, dict[str, Any]]:
    """Every container that runs MLflow code: the server, training, the predictor, and
    the rollout controller."""
    found = {
        "predictor": predictor_of(rendered)["containers"][0],
        "training": rendered.one("Job")["spec"]["template"]["spec"]["containers"][0],
    }
    for deployment in rendered.of_kind("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if container["name"] in ("mlflow", "controller", "rollout-controller"):
                found[container["name"]] = container
    return found


@pytest.mark.parametrize("telemetry", [False, True])
def test_mlflow_telemetry_is_off_in_every_mlflow_process_unless_asked(telemetry: bool) -> None:
    rendered = render(
        {"mlflow": {"telemetry": telemetry}, "rollout": {"controller": {"enabled": True}}}
    )
    containers = mlflow_code_containers(rendered)

    assert {"predictor", "training", "mlflow"} <= set(containers)
    assert len(containers) == 4, sorted(containers)  # the controller's too
    expected = {} if telemetry else {"MLFLOW_DISABLE_TELEMETRY": "true"}
    assert {
        name: {k: v for k, v in env_of(c).items() if k == "MLFLOW_DISABLE_TELEMETRY"}
        for name, c in containers.items()
    } == dict.fromkeys(containers, expected)
