"""The chart's prediction log, KServe's payload logger and the retraining CronJob, on
Helm's own engine (the scenario `production-loop` also runs through every chart check:
strict lint, schemas, the real CRDs, hardened pods)."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from tests.chart.render import Rendered, render
from tests.chart.validation import containers_of

pytestmark = pytest.mark.chart

SINK_ON = {"predictionLog": {"enabled": True, "database": {"existingSecret": "pl-db"}}}
LOGGER_ON = {"predictor": {"logger": {"enabled": True, "mode": "response"}}}


def kinds_and_names(rendered: Rendered) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in rendered.objects}


def predictor_env(rendered: Rendered) -> dict[str, Any]:
    [(_, _, container)] = list(containers_of(rendered.one("InferenceService")))
    return {e["name"]: e.get("value") for e in container["env"]}


def test_by_default_no_sink_no_logger_and_no_schedule(default_render: Rendered) -> None:
    names = kinds_and_names(default_render)
    assert not [n for n in names if "predictionlog" in n[1] or n[0] == "CronJob"]
    assert "logger" not in default_render.one("InferenceService")["spec"]["predictor"]


def test_the_logger_points_kserve_at_the_chart_s_sink_and_leaves_logger_url_unset() -> None:
    rendered = render({**SINK_ON, **LOGGER_ON})
    service = rendered.one("Service", "predictionlog")
    logger = rendered.one("InferenceService")["spec"]["predictor"]["logger"]

    assert logger == {
        "mode": "response",
        "url": f"http://{service['metadata']['name']}.mlops.svc.cluster.local:"
        f"{service['spec']['ports'][0]['port']}/",
    }
    # In the cluster KServe's agent posts the events: the predictor must not post them too.
    assert not {"LOGGER_URL", "LOGGER_MODE"} & set(predictor_env(rendered))


def test_the_logger_may_point_at_any_url_without_the_chart_s_sink() -> None:
    rendered = render({"predictor": {"logger": {"enabled": True, "url": "http://sink.other:80/"}}})
    assert rendered.one("InferenceService")["spec"]["predictor"]["logger"]["url"] == (
        "http://sink.other:80/"
    )
    assert not [o for o in rendered.objects if "predictionlog" in o["metadata"]["name"]]


def test_the_logger_without_a_destination_is_refused_with_what_to_set() -> None:
    with pytest.raises(helm.errors.HelmError, match=r"predictionLog\.enabled=true"):
        render(LOGGER_ON)


def test_the_sink_reads_its_database_url_from_its_own_secret() -> None:
    [(_, _, container)] = list(containers_of(render(SINK_ON).one("Deployment", "predictionlog")))
    env = {e["name"]: e for e in container["env"]}
    assert env["DATABASE_URL"]["valueFrom"] == {"secretKeyRef": {"name": "pl-db", "key": "uri"}}
    assert env["DATABASE_SCHEMA"]["value"] == "predictionlog"
    assert env["RETENTION_DAYS"]["value"] == "30"


def test_the_sink_shares_mlflow_s_postgresql_when_it_has_no_secret_of_its_own(
    rendered_scenarios: dict[str, Rendered],
) -> None:
    rendered = rendered_scenarios["production-loop"]
    [(_, _, container)] = list(containers_of(rendered.one("Deployment", "predictionlog")))
    env = {e["name"]: e for e in container["env"]}
    mlflow = rendered.values["mlflow"]["backend"]
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": mlflow["existingSecret"],
        "key": mlflow["existingSecretKey"],
    }
    assert env["RETENTION_DAYS"]["value"] == "14"


def test_the_sink_without_any_database_is_refused_with_what_to_set() -> None:
    with pytest.raises(helm.errors.HelmError, match=r"predictionLog\.database\.existingSecret"):
        render({"predictionLog": {"enabled": True}})


def test_only_the_predictor_pods_and_prometheus_reach_the_sink() -> None:
    rendered = render(SINK_ON)
    policy = rendered.one("NetworkPolicy", "predictionlog")["spec"]
    deployment = rendered.one("Deployment", "predictionlog")
    assert policy["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    senders, scrapers = policy["ingress"]
    assert [p["podSelector"]["matchLabels"] for p in senders["from"]] == [
        {
            "app.kubernetes.io/name": "mlops",
            "app.kubernetes.io/instance": "mlops",
            "app.kubernetes.io/component": "predictor",
        },
        {"serving.kserve.io/inferenceservice": "breast-cancer"},
    ]
    assert scrapers["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    monitor = rendered.one("PodMonitor", "predictionlog")["spec"]
    assert monitor["podMetricsEndpoints"][0]["port"] == "http"


def test_history_clients_join_the_senders_rule() -> None:
    reader = {"podSelector": {"matchLabels": {"app": "notebook"}}}
    values = {"predictionLog": {**SINK_ON["predictionLog"], "historyClients": [reader]}}
    policy = render(values).one("NetworkPolicy", "predictionlog")["spec"]
    assert policy["ingress"][0]["from"][-1] == reader


def test_the_schedule_runs_the_training_job_s_own_spec_one_at_a_time() -> None:
    rendered = render(
        {"training": {"schedule": {"enabled": True, "cron": "15 4 * * 1", "suspend": True}}}
    )
    cronjob = rendered.one("CronJob")["spec"]
    assert (cronjob["schedule"], cronjob["concurrencyPolicy"], cronjob["suspend"]) == (
        "15 4 * * 1",
        "Forbid",
        True,
    )
    # The same template: container, settings, retries, deadlines, exit-code policy.
    assert cronjob["jobTemplate"]["spec"] == rendered.one("Job")["spec"]


def test_the_schedule_follows_a_change_of_the_training_settings() -> None:
    rendered = render(
        {"training": {"schedule": {"enabled": True}, "settings": {"candidates": "logreg"}}}
    )
    [(_, _, container)] = list(containers_of(rendered.one("CronJob")))
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CANDIDATES"] == "logreg"
    assert env["MODEL_NAME"] == "breast-cancer"


def test_a_cron_string_that_is_not_one_is_refused_by_the_schema() -> None:
    with pytest.raises(helm.errors.HelmError, match="cron"):
        render({"training": {"schedule": {"enabled": True, "cron": "every sunday"}}})
