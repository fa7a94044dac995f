"""The built image runs the chart's three processes as its non-root user: MLflow with the
chart's arguments, the training Job registering a model through it, and the predictor
loading that model, turning ready and answering a V2 request. Run by `make image-check`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.chart.mlflow_args import local_mlflow_command
from tests.chart.render import Rendered, render
from tests.images.conftest import ImageRoot
from tests.support import (
    PYTHON,
    REPO_ROOT,
    Process,
    free_port,
    http_ok,
    last_json,
    start_process,
    wait_http_ok,
)

MODEL = "breast-cancer"


@pytest.fixture(scope="module")
def chart() -> Rendered:
    return render()


def run_in_image(
    image_root: ImageRoot, args: list[str], env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        image_root.command(args, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_image_runs_as_a_numeric_non_root_user(image_root: ImageRoot) -> None:
    user, _, group = image_root.user.partition(":")
    assert user.isdigit() and int(user) != 0, "kubelet checks runAsNonRoot on a numeric UID"
    assert group.isdigit() and int(group) != 0
    chart_context = render().values["containerSecurityContext"]
    assert (chart_context["runAsUser"], chart_context["runAsGroup"]) == (int(user), int(group))
    done = run_in_image(image_root, ["id", "-u"])
    assert done.stdout.strip() == user, done.stderr


def test_only_tmp_is_writable(image_root: ImageRoot) -> None:
    probe = (
        "import sys\n"
        "for path in ('/opt/venv/probe', '/probe', '/tmp/probe'):\n"
        "    try:\n"
        "        open(path, 'w').close()\n"
        "        print(path, 'writable')\n"
        "    except OSError as e:\n"
        "        print(path, 'refused', e.errno)\n"
    )
    done = run_in_image(image_root, ["python", "-c", probe])
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.strip().splitlines())
    assert lines["/tmp/probe"] == "writable"
    assert lines["/opt/venv/probe"].startswith("refused")
    assert lines["/probe"].startswith("refused")


def test_the_image_has_every_driver_the_chart_can_ask_for(image_root: ImageRoot) -> None:
    """PostgreSQL (psycopg), S3 (boto3), MLflow's /metrics, the predictor and training."""
    done = run_in_image(
        image_root,
        ["python", "-c", "import psycopg, boto3, prometheus_flask_exporter, kserve, "
         "mlflow, sklearn, skops, training.pipeline, serving.model; print('ok')"],
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


@pytest.fixture(scope="module")
def image_mlflow(
    image_root: ImageRoot, chart: Rendered, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The image's `mlflow server` with the chart's arguments; its volume under /tmp."""
    data_dir = image_root.path / "tmp" / "mlflow-volume"
    data_dir.mkdir()
    uid, _, gid = image_root.user.partition(":")
    os.chown(data_dir, int(uid), int(gid or uid))
    port = free_port()
    command = local_mlflow_command(
        chart, data_dir=Path("/tmp/mlflow-volume"), tmp_dir=Path("/tmp"), port=port
    )
    process = start_process(
        image_root.command(command.args, command.env),
        tmp_path_factory.mktemp("image-mlflow") / "mlflow.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(process, f"{url}/health", 180, "mlflow")
        yield url
    finally:
        process.stop()


def test_mlflow_from_the_image_serves_its_metrics(image_mlflow: str) -> None:
    assert http_ok(f"{image_mlflow}/metrics")


@pytest.fixture(scope="module")
def trained(image_root: ImageRoot, image_mlflow: str, chart: Rendered) -> dict[str, Any]:
    """The training entry point of the image, with the Job's environment."""
    [container] = chart.one("Job")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    # A short run whose model does not depend on timing noise (LATENCY_MARGIN=0).
    env.update(MLFLOW_TRACKING_URI=image_mlflow, SMOKE="true", LATENCY_MARGIN="0")
    done = run_in_image(image_root, container["command"], env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary: dict[str, Any] = last_json(done.stdout)
    return summary


def test_training_from_the_image_registers_a_model(trained: dict[str, Any]) -> None:
    assert (trained["status"], trained["model_name"], trained["version"]) == (
        "registered",
        MODEL,
        "1",
    )
    assert "champion" in trained["aliases_set"]


@pytest.fixture(scope="module")
def image_predictor(
    image_root: ImageRoot,
    image_mlflow: str,
    trained: dict[str, Any],
    chart: Rendered,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Process]]:
    """The predictor of the image with the InferenceService's command, args and env."""
    [container] = chart.one("InferenceService")["spec"]["predictor"]["containers"]
    port, grpc_port = free_port(), free_port()
    args = [f"--http_port={port}" if a.startswith("--http_port=") else a for a in container["args"]]
    args = [f"--grpc_port={grpc_port}" if a.startswith("--grpc_port=") else a for a in args]
    env = {e["name"]: e["value"] for e in container["env"]}
    env["MLFLOW_TRACKING_URI"] = image_mlflow
    process = start_process(
        image_root.command([*container["command"], *args], env),
        tmp_path_factory.mktemp("image-predictor") / "predictor.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        yield url, process
    finally:
        process.stop()


def test_the_predictor_from_the_image_turns_ready_and_answers_v2(
    image_predictor: tuple[str, Process],
) -> None:
    url, process = image_predictor
    assert http_ok(f"{url}/v2/health/live") or process.alive()
    wait_http_ok(
        process,
        f"{url}/v2/models/{MODEL}/ready",
        180,
        "the predictor in the image to load the model",
    )
    assert http_ok(f"{url}/v2/health/ready")
    done = subprocess.run(
        [PYTHON, "scripts/v2_request.py", "--url", url, "--model", MODEL],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr + process.log()[-3000:]
    answer = last_json(done.stdout)
    outputs = {output["name"]: output["data"] for output in answer["outputs"]}
    assert outputs["class_name"] == ["malignant", "benign"]
    assert answer["model_version"] == "1"
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    info = [line for line in metrics.splitlines() if line.startswith("inference_model_info{")]
    assert len(info) == 1 and 'model_version="1"' in info[0] and info[0].endswith(" 1.0"), info
