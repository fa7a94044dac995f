"""Every PromQL expression of the chart (rules and dashboard) against a real Prometheus
scraping a real predictor that serves a model from a real MLflow registry."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from tests.chart.render import NAMESPACE, Rendered, write_rules
from tests.support import (
    PYTHON,
    REPO_ROOT,
    MlflowServer,
    free_port,
    last_json,
    running_mlflow,
    running_prometheus,
    start_process,
    wait_http_ok,
    wait_until,
)

pytestmark = [pytest.mark.chart, pytest.mark.integration]

MODEL = "breast-cancer"
# Grafana's variables, as a user of the dashboard would pick them.
GRAFANA_VARIABLES = {"$namespace": NAMESPACE, "$model_name": MODEL, "$__rate_interval": "1m"}


@dataclass
class Predictor:
    url: str
    port: int


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    pytest.importorskip("training.pipeline")
    with running_mlflow(tmp_path_factory.mktemp("promql-mlflow")) as server:
        done = subprocess.run(
            [PYTHON, "-m", "training", "--tracking-uri", server.url, "--model-name", MODEL,
             "--smoke", "--latency-margin", "0"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        yield server


@pytest.fixture(scope="module")
def predictor(
    registry: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Predictor]:
    pytest.importorskip("serving.model")
    port, grpc_port = free_port(), free_port()
    process = start_process(
        [PYTHON, "-m", "serving", f"--http_port={port}", f"--grpc_port={grpc_port}"],
        tmp_path_factory.mktemp("promql-predictor") / "predictor.log",
        env={
            "MODEL_URI": f"models:/{MODEL}@champion",
            "MODEL_NAME": MODEL,
            "MLFLOW_TRACKING_URI": registry.url,
        },
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(
            process, f"{url}/v2/models/{MODEL}/ready", 180, "the predictor to load its model"
        )
        yield Predictor(url=url, port=port)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def prometheus(
    predictor: Predictor, default_render: Rendered, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Prometheus scraping the predictor every second, with the chart's rules loaded.

    The target gets the labels the PodMonitor's target would have in the cluster (job
    `<namespace>/<PodMonitor>`, namespace, pod), so the rules select it as they would.
    """
    folder = tmp_path_factory.mktemp("prometheus")
    rules = write_rules(default_render, folder)
    monitor = default_render.one("PodMonitor", "-predictor")["metadata"]["name"]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": f"{NAMESPACE}/{monitor}",
                "metrics_path": "/metrics",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{predictor.port}"],
                        "labels": {"namespace": NAMESPACE, "pod": f"{MODEL}-predictor-00001"},
                    }
                ],
            }
        ],
    }
    with running_prometheus(folder, config) as url:
        yield url


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = requests.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}\n{body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def send_traffic(predictor: Predictor, seconds: float = 4, max_requests: int = 200) -> None:
    """Valid and invalid V2 requests for a few seconds (bounded in time and count)."""
    metadata = requests.get(f"{predictor.url}/v2/models/{MODEL}", timeout=10).json()
    width = int(metadata["inputs"][0]["shape"][-1])
    good = {"inputs": [{"name": "features", "shape": [2, width], "datatype": "FP64",
                        "data": [0.0] * width + [1.0] * width}]}  # fmt: skip
    bad = {"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP64", "data": [0.0] * 3}]}
    deadline, sent = time.monotonic() + seconds, 0
    while time.monotonic() < deadline and sent < max_requests:
        body = bad if sent % 5 == 4 else good
        response = requests.post(f"{predictor.url}/v2/models/{MODEL}/infer", json=body, timeout=10)
        assert response.status_code == (400 if body is bad else 200), response.text
        sent += 1
        time.sleep(0.02)


def rule_expressions(rendered: Rendered) -> dict[str, str]:
    rule = rendered.one("PrometheusRule")
    return {
        r.get("alert") or r["record"]: r["expr"]
        for group in rule["spec"]["groups"]
        for r in group["rules"]
    }


def dashboard_expressions(rendered: Rendered) -> dict[str, str]:
    config_map = rendered.one("ConfigMap", "-dashboard")
    dashboard = json.loads(next(iter(config_map["data"].values())))
    found: dict[str, str] = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found[f"{panel['title']} / {target['refId']}"] = expr
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            expr = variable["query"]["query"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            # label_values(metric, label) is Grafana's; Prometheus answers the metric part.
            found[f"variable {variable['name']}"] = expr.split("(", 1)[1].rsplit(",", 1)[0]
    return found


@pytest.fixture(scope="module")
def scraped(predictor: Predictor, prometheus: str) -> str:
    # The first scrape must come before the traffic, or every sample is the same count.
    wait_until(lambda: bool(query(prometheus, "up == 1")), 30, "a first scrape", interval=0.5)
    send_traffic(predictor)
    increase = f'increase(inference_requests_total{{model_name="{MODEL}"}}[1m]) > 0'
    wait_until(lambda: bool(query(prometheus, increase)), 30, "the traffic in Prometheus", 0.5)
    return prometheus


def test_every_rule_expression_evaluates_on_real_scrapes(
    scraped: str, default_render: Rendered
) -> None:
    expressions = rule_expressions(default_render)
    assert len(expressions) == 9
    for expr in expressions.values():
        query(scraped, expr)  # asserts success; an empty result is fine for a quiet alert
    # The recording rules see the predictor's traffic, split by version and outcome.
    wait_until(
        lambda: bool(query(scraped, "model_version:inference_requests:rate5m")),
        30,
        "the recording rules to evaluate",
        interval=0.5,
    )
    outcomes = {
        sample["metric"]["outcome"]
        for sample in query(scraped, "model_version:inference_requests:rate5m > 0")
    }
    assert {"ok", "invalid"} <= outcomes
    ratio = query(scraped, "model_version:inference_error_ratio:rate5m")
    assert [float(s["value"][1]) for s in ratio] == [0.0], "invalid requests are no errors"
    p99 = query(scraped, "model_version:inference_request_duration_seconds:p99_5m")
    assert p99 and all(0 < float(s["value"][1]) < 5 for s in p99)


def test_a_healthy_predictor_raises_no_alert(scraped: str, default_render: Rendered) -> None:
    expressions = rule_expressions(default_render)
    for name in ("InferencePredictorDown", "InferenceModelNotLoaded", "InferenceErrorRatioHigh"):
        assert query(scraped, expressions[name]) == [], name


def test_every_dashboard_expression_evaluates_and_shows_the_traffic(
    scraped: str, default_render: Rendered
) -> None:
    expressions = dashboard_expressions(default_render)
    assert len(expressions) >= 10
    empty = [name for name, expr in expressions.items() if not query(scraped, expr)]
    # Every series exists from the first scrape (the error counter at 0), so every panel
    # has data after real traffic.
    assert empty == [], empty
    answered = query(scraped, expressions["Requests per second by model version / A"])
    # `none` is the predictor's series for requests before any model loaded: at rate 0.
    assert {s["metric"]["model_version"] for s in answered if float(s["value"][1]) > 0} == {"1"}
    classes = query(scraped, expressions["Predicted-class mix by model version / A"])
    assert {s["metric"]["class_name"] for s in classes} <= {"malignant", "benign"}
    assert classes


def test_the_smoke_request_script_gets_both_rows_right(predictor: Predictor) -> None:
    """`make smoke`'s request, here straight to the predictor instead of through Kourier."""
    done = subprocess.run(
        [PYTHON, "scripts/v2_request.py", "--url", predictor.url, "--model", MODEL],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = last_json(done.stdout)
    outputs = {output["name"]: output["data"] for output in answer["outputs"]}
    # Row 0 of the data set is malignant, row 19 benign; the champion gets both right.
    assert outputs["class_name"] == ["malignant", "benign"]
    assert outputs["label"] == [0, 1]
    assert answer["model_version"] == "1"
