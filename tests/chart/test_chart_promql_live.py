"""Every PromQL expression of the chart (rules and dashboard) against a real Prometheus
scraping a real predictor that serves a model from a real MLflow registry."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from contract import metric_names as names
from tests.chart.render import (
    NAMESPACE,
    Rendered,
    annotation_expressions,
    dashboard,
    dashboard_expressions,
    panel_queries,
    rule_expressions,
    write_rules,
)
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
REVISION = f"{MODEL}-predictor-00001"
# The Knative revision label as the PodMonitor's podTargetLabels names it in Prometheus.
REVISION_LABEL = "serving_knative_dev_revision"


@dataclass
class Predictor:
    url: str
    port: int


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    pytest.importorskip("training.pipeline")
    root = tmp_path_factory.mktemp("promql-mlflow")
    with running_mlflow(root, expose_metrics=True) as server:
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


def scrape_job(rendered: Rendered, monitor_suffix: str) -> str:
    """The `job` label Prometheus gives the targets of one of the chart's PodMonitors."""
    return f"{NAMESPACE}/{rendered.one('PodMonitor', monitor_suffix)['metadata']['name']}"


def grafana_variables(rendered: Rendered) -> dict[str, str]:
    """Grafana's variables, as a user of the dashboard would pick them (longest first, so
    `$model_name` is never cut by a shorter name)."""
    values = {
        "$namespace": NAMESPACE,
        "$model_name": MODEL,
        "$predictor_job": scrape_job(rendered, "-predictor"),
        "$mlflow_job": scrape_job(rendered, "-mlflow"),
        "$__rate_interval": "1m",
    }
    return dict(sorted(values.items(), key=lambda item: -len(item[0])))


@pytest.fixture(scope="module")
def prometheus(
    registry: MlflowServer,
    predictor: Predictor,
    default_render: Rendered,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """Prometheus scraping the predictor and MLflow every second, with the chart's rules.

    Each target gets the labels its PodMonitor's target would have in the cluster (job
    `<namespace>/<PodMonitor>`, namespace, pod, and the predictor's Knative revision), so
    the rules and the dashboard select it as they would.
    """
    folder = tmp_path_factory.mktemp("prometheus")
    rules = write_rules(default_render, folder)

    def job(name: str, port: int, labels: dict[str, str]) -> dict[str, Any]:
        return {
            "job_name": name,
            "metrics_path": "/metrics",
            "static_configs": [
                {"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": NAMESPACE, **labels}}
            ],
        }

    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            job(
                scrape_job(default_render, "-predictor"),
                predictor.port,
                {"pod": f"{REVISION}-deployment-0", REVISION_LABEL: REVISION},
            ),
            job(scrape_job(default_render, "-mlflow"), registry.port, {"pod": "mlflow-0"}),
        ],
    }
    with running_prometheus(folder, config) as url:
        yield url


def query(prometheus: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params: dict[str, str | float] = {"query": expr}
    if at is not None:
        params["time"] = at
    response = requests.get(f"{prometheus}/api/v1/query", params=params, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}\n{body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def send_traffic(
    predictor: Predictor, registry: MlflowServer, seconds: float = 4, max_requests: int = 200
) -> None:
    """Valid and invalid V2 requests for a few seconds (bounded in time and count), and a
    few registry look-ups, as a predictor's start makes them."""
    for _ in range(5):
        found = requests.get(
            f"{registry.url}/api/2.0/mlflow/registered-models/get",
            params={"name": MODEL},
            timeout=10,
        )
        assert found.status_code == 200, found.text
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


@pytest.fixture(scope="module")
def scraped(predictor: Predictor, registry: MlflowServer, prometheus: str) -> str:
    # The first scrape must come before the traffic, or every sample is the same count.
    wait_until(lambda: len(query(prometheus, "up == 1")) == 2, 30, "a first scrape", interval=0.5)
    send_traffic(predictor, registry)
    increase = f'increase({names.REQUESTS}{{{names.MODEL_NAME}="{MODEL}"}}[1m]) > 0'
    wait_until(lambda: bool(query(prometheus, increase)), 30, "the traffic in Prometheus", 0.5)
    return prometheus


@dataclass(frozen=True)
class Drifted:
    """Rows of the data set with one feature shifted by two standard deviations, sent
    after the other traffic, and the window of Prometheus' samples that holds them only."""

    prometheus: str
    feature: int
    rows: Any
    at: float
    """Evaluation time: just after the first scrape that saw every row."""
    window: str
    """From just before the last scrape before the rows: `increase()` over it is theirs."""


def last_scrape(prometheus: str) -> float:
    found = query(prometheus, f"max(timestamp({names.FEATURE_BIN}))")
    return float(found[0]["value"][1]) if found else 0.0


@pytest.fixture(scope="module")
def drifted(predictor: Predictor, scraped: str) -> Drifted:
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    rows = load_breast_cancer().data.astype(np.float64)
    feature = 0  # mean radius
    rows[:, feature] += 2 * rows[:, feature].std()
    # A scrape after the earlier traffic: the window starts just before it, so rate()
    # over it sees these rows only.
    quiet = time.time()
    wait_until(lambda: last_scrape(scraped) > quiet, 30, "a scrape after the traffic", 0.2)
    base = last_scrape(scraped)
    for start in range(0, len(rows), 20):  # 29 requests of at most 20 rows
        batch = rows[start : start + 20]
        body = {"inputs": [{"name": "features", "shape": list(batch.shape), "datatype": "FP64",
                            "data": batch.ravel().tolist()}]}  # fmt: skip
        response = requests.post(f"{predictor.url}/v2/models/{MODEL}/infer", json=body, timeout=10)
        assert response.status_code == 200, response.text
    sent = time.time()
    wait_until(lambda: last_scrape(scraped) > sent, 30, "a scrape after the drifted rows", 0.2)
    at = last_scrape(scraped) + 0.002
    window = f"{round((at - base) * 1000) + 2}ms"
    return Drifted(scraped, feature, rows, at, window)


def expected_psi(profile: Any, rows: Any, floor: float = 0.0001) -> list[float]:
    """PSI per feature in Python, from the profile the version was registered with."""
    import numpy as np

    from contract.drift_profile import bin_indices

    out = []
    for j, f in enumerate(profile.features):
        served = np.bincount(bin_indices(rows[:, j], f.edges), minlength=f.bins) / len(rows)
        p, q = np.maximum(served, floor), np.maximum(np.asarray(f.shares), floor)
        out.append(float(((p - q) * np.log(p / q)).sum()))
    return out


def test_rows_shifted_on_one_feature_make_its_psi_exceed_the_threshold_and_no_other(
    drifted: Drifted,
    registry: MlflowServer,
    default_render: Rendered,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The recording rules' expressions, with their 30-minute window narrowed to the
    drifted rows' (the test cannot wait half an hour), through the HTTP API."""
    import mlflow.artifacts

    from contract.drift_profile import PROFILE_FILE, DriftProfile

    expressions = rule_expressions(default_render)
    window = f"[{drifted.window}]"
    served = expressions[names.RECORDED_FEATURE_SERVED_SHARE].replace("[30m]", window)
    psi_expr = expressions[names.RECORDED_FEATURE_PSI].replace(
        names.RECORDED_FEATURE_SERVED_SHARE, f"({served})"
    )
    psi = {
        s["metric"]["feature"]: float(s["value"][1])
        for s in query(drifted.prometheus, psi_expr, at=drifted.at)
    }
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.url)  # models:/ reads the registry's
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{MODEL}/1")
    profile = DriftProfile.from_json((Path(local) / PROFILE_FILE).read_bytes())
    threshold = default_render.values["monitoring"]["prometheusRule"]["featureDriftPsiThreshold"]
    shifted = profile.features[drifted.feature].name
    assert set(psi) == set(profile.feature_names)
    assert psi[shifted] > threshold, psi
    others = {name: value for name, value in psi.items() if name != shifted}
    assert max(others.values()) < threshold, others
    # The same numbers as counted in Python from the registered profile (rate()'s
    # extrapolation over the window's last millisecond aside).
    expected = dict(zip(profile.feature_names, expected_psi(profile, drifted.rows), strict=True))
    assert psi == pytest.approx(expected, rel=0.01, abs=1e-4)
    # And the alert's expression picks that feature, had it held for featureDriftFor.
    alert = expressions["InferenceFeatureDrift"].replace(
        names.RECORDED_FEATURE_PSI, f"({psi_expr})"
    )
    fired = query(drifted.prometheus, alert, at=drifted.at)
    assert [s["metric"]["feature"] for s in fired] == [shifted]


def test_every_rule_expression_evaluates_on_real_scrapes(
    scraped: str, default_render: Rendered
) -> None:
    expressions = rule_expressions(default_render)
    assert len(expressions) == 12
    for expr in expressions.values():
        query(scraped, expr)  # asserts success; an empty result is fine for a quiet alert
    # The recording rules see the predictor's traffic, split by version and outcome.
    wait_until(
        lambda: bool(query(scraped, names.RECORDED_REQUESTS_RATE)),
        30,
        "the recording rules to evaluate",
        interval=0.5,
    )
    outcomes = {
        sample["metric"]["outcome"]
        for sample in query(scraped, f"{names.RECORDED_REQUESTS_RATE} > 0")
    }
    assert {"ok", "invalid"} <= outcomes
    ratio = query(scraped, names.RECORDED_ERROR_RATIO)
    assert [float(s["value"][1]) for s in ratio] == [0.0], "invalid requests are no errors"
    p99 = query(scraped, names.RECORDED_P99)
    assert p99 and all(0 < float(s["value"][1]) < 5 for s in p99)


def test_a_healthy_predictor_raises_no_alert(scraped: str, default_render: Rendered) -> None:
    expressions = rule_expressions(default_render)
    for name in ("InferencePredictorDown", "InferenceModelNotLoaded", "InferenceErrorRatioHigh"):
        assert query(scraped, expressions[name]) == [], name


def test_every_dashboard_expression_evaluates_and_shows_the_traffic(
    scraped: str, drifted: Drifted, default_render: Rendered
) -> None:
    expressions = dashboard_expressions(default_render, grafana_variables(default_render))
    assert len(expressions) >= 25
    # The recording rules the stat row and the drift panel read need a first evaluation
    # with the traffic (the drift rules: enough rows, which the drifted ones add).
    for recorded in (names.RECORDED_P99, names.RECORDED_FEATURE_PSI):
        wait_until(
            lambda r=recorded: bool(query(scraped, r)),  # type: ignore[misc]
            30,
            "the recording rules to evaluate",
            interval=0.5,
        )
    empty = [name for name, expr in expressions.items() if not query(scraped, expr)]
    # Every series exists from the first scrape (the error counter at 0), so every panel
    # has data after real traffic.
    assert empty == [], empty
    answered = query(scraped, expressions["Requests per second by model version / A"])
    # `none` is the predictor's series for requests before any model loaded: at rate 0.
    assert {s["metric"]["model_version"] for s in answered if float(s["value"][1]) > 0} == {"1"}
    served = query(scraped, expressions["Served versions (pods) / A"])
    assert [(s["metric"]["model_version"], s["value"][1]) for s in served] == [("1", "1")]
    revisions = query(scraped, expressions["Requests per second by revision / A"])
    assert {s["metric"][REVISION_LABEL] for s in revisions} == {REVISION}
    memory = query(scraped, expressions["Memory per predictor pod / A"])
    assert all(50e6 < float(s["value"][1]) < 4e9 for s in memory), memory
    restarts = query(scraped, expressions["Restarts per predictor pod (1h) / A"])
    assert [float(s["value"][1]) for s in restarts] == [0.0]
    statuses = query(scraped, expressions["MLflow requests per second by status / A"])
    assert "200" in {s["metric"]["status"] for s in statuses}
    top = query(scraped, expressions["Top drifting features per version (PSI, 30m) / A"])
    assert {s["metric"]["model_version"] for s in top} == {"1"} and len(top) == 5


def test_every_ratio_panel_yields_values_between_0_and_1(
    scraped: str, default_render: Rendered
) -> None:
    """A `percentunit` panel shows 1.0 as 100 %: a raw rate there reads as thousands of %."""
    ratios = {
        n: p.expr
        for n, p in panel_queries(default_render, grafana_variables(default_render)).items()
        if p.unit == "percentunit"
    }
    assert len(ratios) >= 6, sorted(ratios)
    wait_until(
        lambda: bool(query(scraped, names.RECORDED_REQUESTS_RATE)),
        30,
        "the recording rules to evaluate",
        interval=0.5,
    )
    outside: dict[str, list[float]] = {}
    for name, expr in ratios.items():
        values = [float(sample["value"][1]) for sample in query(scraped, expr)]
        # NaN (0 / 0) fails the comparison too: a ratio panel must drop empty versions.
        if not all(0.0 <= value <= 1.0 for value in values):
            outside[name] = values
    assert outside == {}, outside


def test_the_class_mix_gives_each_version_shares_that_add_up_to_one(
    scraped: str, default_render: Rendered
) -> None:
    queries = panel_queries(default_render, grafana_variables(default_render))
    expr = queries["Predicted-class mix by model version / A"].expr
    shares: dict[str, dict[str, float]] = {}
    for sample in query(scraped, expr):
        labels = sample["metric"]
        shares.setdefault(labels["model_version"], {})[labels["class_name"]] = float(
            sample["value"][1]
        )
    # The traffic's rows are all zeros and all ones: one of each class, half the rows each.
    assert set(shares) == {"1"}
    assert set(shares["1"]) <= {"malignant", "benign"}
    assert sum(shares["1"].values()) == pytest.approx(1.0)
    panel = next(
        p for p in dashboard(default_render)["panels"] if p["title"].startswith("Predicted")
    )
    assert panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "none"


def test_the_rollout_annotations_mark_the_version_s_start_and_stay_quiet_after(
    scraped: str, default_render: Rendered
) -> None:
    annotations = annotation_expressions(default_render, grafana_variables(default_render))
    assert set(annotations) == {"Version starts serving", "Version stops serving", "Alerts firing"}
    # Seconds after the first scrape that saw the model, v1 has just started serving ...
    started_at = min(
        float(s["value"][1])
        for s in query(scraped, "min_over_time(timestamp(inference_model_info)[5m:1s])")
    )
    starts = query(scraped, annotations["Version starts serving"], at=started_at + 2)
    assert [s["metric"]["model_version"] for s in starts] == ["1"]
    # ... and now, with the same version served throughout, nothing stops and no alert fires.
    assert query(scraped, annotations["Version stops serving"]) == []
    assert query(scraped, annotations["Alerts firing"]) == []


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


def test_the_helm_test_pod_s_command_passes_against_a_real_predictor(
    predictor: Predictor, default_render: Rendered
) -> None:
    """The pod's command and args as kubelet runs them ($(VAR) from its env), with the
    script where the Dockerfile copies it from and the cluster-local URL made local."""
    [container] = default_render.one("Pod", "-test-v2")["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    env["PREDICTOR_URL"] = predictor.url
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in container["args"]]
    python, script = container["command"]
    assert (python, script) == ("python", "/opt/mlops/v2_request.py")
    done = subprocess.run(
        [PYTHON, str(REPO_ROOT / "scripts" / "v2_request.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = last_json(done.stdout)
    assert (answer["model_name"], answer["model_version"]) == (MODEL, "1")
