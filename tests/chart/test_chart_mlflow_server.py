"""MLflow started with exactly the arguments the chart gives it, against SQLite and a real
PostgreSQL; the training package registers a model through it, as the Job does."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.chart.mlflow_args import local_mlflow_command, mlflow_container
from tests.chart.render import Rendered, render
from tests.support import (
    BIN_DIR,
    PYTHON,
    REPO_ROOT,
    Process,
    free_port,
    last_json,
    running_postgresql,
    start_process,
    wait_http_ok,
)

pytestmark = [pytest.mark.chart, pytest.mark.integration]

MODEL = "breast-cancer"


@dataclass
class ChartMlflow:
    url: str
    process: Process
    data_dir: Path
    tmp_dir: Path


@contextmanager
def running_chart_mlflow(
    rendered: Rendered, root: Path, secret_env: dict[str, str] | None = None
) -> Iterator[ChartMlflow]:
    """`mlflow server` with the chart's arguments, on 127.0.0.1; stopped on exit."""
    port = free_port()
    data_dir, tmp_dir = root / "volume", root / "tmp"
    data_dir.mkdir(parents=True)
    tmp_dir.mkdir()
    command = local_mlflow_command(rendered, data_dir=data_dir, tmp_dir=tmp_dir, port=port)
    assert sorted(command.secret_env) == sorted(secret_env or {}), "the Secrets to supply"
    env = {
        **command.env,
        **(secret_env or {}),
        "PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    args = [str(BIN_DIR / command.args[0]), *command.args[1:]]
    process = start_process(args, root / "mlflow.log", env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(process, f"{url}/health", 240, f"mlflow on {url}")
        yield ChartMlflow(url=url, process=process, data_dir=data_dir, tmp_dir=tmp_dir)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartMlflow]:
    with running_chart_mlflow(render(), tmp_path_factory.mktemp("chart-mlflow")) as server:
        yield server


def train_through(
    rendered: Rendered, url: str, secret_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """`python -m training` with the Job's own environment, pointed at the local server.

    Two settings are changed for a short, reproducible run: SMOKE, and LATENCY_MARGIN=0 so
    that the measured predict latency (noisy on a loaded machine) cannot pick the model.
    """
    job = rendered.one("Job")
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    from_secrets = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert from_secrets == set(secret_env or {}), "the Secrets to supply"
    env.update(
        MLFLOW_TRACKING_URI=url,
        SMOKE="true",
        LATENCY_MARGIN="0",
        HOME=os.environ.get("HOME", "/tmp"),
    )
    env.pop("MPLCONFIGDIR")
    env.update(secret_env or {})
    done = subprocess.run(
        [PYTHON, *container["command"][1:]],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary: dict[str, Any] = last_json(done.stdout)
    return summary


def registered_versions(url: str) -> list[str]:
    response = requests.get(
        f"{url}/api/2.0/mlflow/model-versions/search",
        params={"filter": f"name='{MODEL}'"},
        timeout=10,
    )
    response.raise_for_status()
    return [v["version"] for v in response.json().get("model_versions", [])]


def test_sqlite_server_with_chart_args_registers_a_model_and_exposes_metrics(
    sqlite_server: ChartMlflow,
) -> None:
    pytest.importorskip("training.pipeline")
    server = sqlite_server
    summary = train_through(render(), server.url)
    assert (summary["status"], summary["model_name"], summary["version"]) == (
        "registered",
        MODEL,
        "1",
    )
    assert registered_versions(server.url) == ["1"]
    # SQLite and the proxied artifacts both landed on the "volume".
    assert (server.data_dir / "mlflow.db").is_file()
    assert any((server.data_dir / "artifacts").rglob("MLmodel"))

    metrics = requests.get(f"{server.url}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert "mlflow_http_request_total" in metrics.text


def test_the_metrics_sidecar_serves_mlflow_s_metrics_on_its_own_port(
    sqlite_server: ChartMlflow, tmp_path: Path
) -> None:
    """The sidecar's command and environment as rendered, reading the server's multiprocess
    files (the shared /tmp of the pod): what Prometheus scrapes without reaching the API."""
    rendered = render()
    sidecar = mlflow_container(rendered, "metrics")
    port = free_port()
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/prometheus"
    env.update(PROMETHEUS_MULTIPROC_DIR=str(sqlite_server.tmp_dir / "prometheus"),
               METRICS_PORT=str(port))  # fmt: skip
    assert [p["containerPort"] for p in sidecar["ports"]] == [
        rendered.values["mlflow"]["metricsPort"]
    ]
    requests.get(f"{sqlite_server.url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    process = start_process([PYTHON, *sidecar["command"][1:]], tmp_path / "sidecar.log", env=env)
    try:
        wait_http_ok(process, f"http://127.0.0.1:{port}/metrics", 60, "the metrics sidecar")
        scraped = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        process.stop()
    assert "mlflow_http_request_total{" in scraped
    assert "mlflow_http_request_duration_seconds_bucket" in scraped


# --- MLflow's basic-auth app, as `mlflow.auth` runs it ----------------------------------

AUTH_VALUES = {"mlflow": {"auth": {"enabled": True, "existingSecret": "mlflow-admin",
                                   "readerSecret": "mlflow-reader"}}}  # fmt: skip
ADMIN = ("admin", "Adm1n-" + os.urandom(8).hex())
READER = ("predictor", "Re4der-" + os.urandom(8).hex())


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartMlflow]:
    rendered = render(AUTH_VALUES)
    secret = {
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex(),
    }
    with running_chart_mlflow(rendered, tmp_path_factory.mktemp("auth-mlflow"), secret) as server:
        yield server


def as_user(user: tuple[str, str]) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": user[0], "MLFLOW_TRACKING_PASSWORD": user[1]}


def test_with_auth_nothing_but_health_answers_without_a_user(auth_server: ChartMlflow) -> None:
    assert requests.get(f"{auth_server.url}/health", timeout=10).status_code == 200
    search = f"{auth_server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, timeout=10).status_code == 401
    assert requests.get(search, auth=(ADMIN[0], "wrong-password"), timeout=10).status_code == 401
    assert requests.get(search, auth=ADMIN, timeout=10).status_code == 200
    # The user store is on the volume, beside the registry.
    assert (auth_server.data_dir / "basic_auth.db").is_file()


def test_with_auth_training_registers_as_the_admin_and_the_predictor_only_reads(
    auth_server: ChartMlflow,
) -> None:
    pytest.importorskip("training.pipeline")
    rendered = render(AUTH_VALUES)
    summary = train_through(rendered, auth_server.url, as_user(ADMIN))
    assert (summary["status"], summary["version"]) == ("registered", "1")
    created = requests.post(
        f"{auth_server.url}/api/2.0/mlflow/users/create",
        json={"username": READER[0], "password": READER[1]},
        auth=ADMIN,
        timeout=10,
    )
    assert created.status_code == 200, created.text
    # The predictor's way in: resolve @champion and download the model, as the reader.
    read = subprocess.run(
        [PYTHON, "-c", READER_SCRIPT, auth_server.url],
        env={**os.environ, **as_user(READER)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr[-3000:]
    assert read.stdout.split() == ["1", "MLmodel", "refused"], read.stdout
    # Nor may the reader add a version to the model, or delete it. (MLflow lets any user
    # create models of their own; the served one stays the admin's.)
    version = requests.post(
        f"{auth_server.url}/api/2.0/mlflow/model-versions/create",
        json={"name": MODEL, "source": "mlflow-artifacts:/intruder"},
        auth=READER,
        timeout=10,
    )
    assert version.status_code == 403, version.text
    deleted = requests.delete(
        f"{auth_server.url}/api/2.0/mlflow/registered-models/delete",
        json={"name": MODEL},
        auth=READER,
        timeout=10,
    )
    assert deleted.status_code == 403, deleted.text
    assert registered_versions_as(auth_server.url, ADMIN) == ["1"]


def registered_versions_as(url: str, user: tuple[str, str]) -> list[str]:
    response = requests.get(
        f"{url}/api/2.0/mlflow/model-versions/search",
        params={"filter": f"name='{MODEL}'"},
        auth=user,
        timeout=10,
    )
    response.raise_for_status()
    return [v["version"] for v in response.json().get("model_versions", [])]


READER_SCRIPT = """
import os, sys, tempfile
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException
client = MlflowClient(tracking_uri=sys.argv[1])
version = client.get_model_version_by_alias("breast-cancer", "champion").version
print(version)
os.environ["MLFLOW_TRACKING_URI"] = sys.argv[1]
folder = download_artifacts(f"models:/breast-cancer/{version}", dst_path=tempfile.mkdtemp())
print("MLmodel" if os.path.isfile(os.path.join(folder, "MLmodel")) else "missing")
try:
    client.set_registered_model_alias("breast-cancer", "champion", "1")
    print("allowed")
except MlflowException:
    print("refused")
"""


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("mlops-mlflow:5000", 200),
        ("mlops-mlflow.mlops.svc.cluster.local:5000", 200),
        ("10.244.0.17:5000", 200),  # Prometheus scraping the pod IP
        ("evil.example.com", 403),
    ],
)
def test_sqlite_server_accepts_its_service_names_and_refuses_other_hosts(
    sqlite_server: ChartMlflow, host: str, status: int
) -> None:
    response = requests.get(
        f"{sqlite_server.url}/api/2.0/mlflow/experiments/search",
        params={"max_results": 1},
        headers={"Host": host},
        timeout=10,
    )
    assert response.status_code == status


def test_mlflow_behind_the_chart_s_ingress_accepts_the_ingress_host(tmp_path: Path) -> None:
    """MLflow's DNS-rebinding guard must let the Ingress's host through, and no other."""
    rendered = render({"mlflow": {"ingress": {"enabled": True, "hosts": ["mlflow.example.com"]}}})
    with running_chart_mlflow(rendered, tmp_path) as server:
        statuses = {
            host: requests.get(
                f"{server.url}/api/2.0/mlflow/experiments/search",
                params={"max_results": 1},
                headers={"Host": host},
                timeout=10,
            ).status_code
            for host in ("mlflow.example.com", "elsewhere.example.com")
        }
    assert statuses == {"mlflow.example.com": 200, "elsewhere.example.com": 403}


@pytest.fixture
def postgresql() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) with an `mlflow` database."""
    with running_postgresql(user="mlflow", database="mlflow") as url:
        yield url


def test_postgresql_server_with_chart_args_registers_a_model(
    tmp_path: Path, postgresql: str
) -> None:
    pytest.importorskip("training.pipeline")
    rendered = render(
        {"mlflow": {"backend": {"type": "postgresql", "existingSecret": "mlflow-postgresql"}}}
    )
    # The database URL reaches the server the way the chart delivers it: from the Secret,
    # as MLFLOW_BACKEND_STORE_URI, never as an argument.
    secret = {"MLFLOW_BACKEND_STORE_URI": postgresql}
    with running_chart_mlflow(rendered, tmp_path, secret) as server:
        summary = train_through(rendered, server.url)
        versions = registered_versions(server.url)
    assert not (server.data_dir / "mlflow.db").exists()
    assert (summary["status"], summary["version"]) == ("registered", "1")
    assert versions == ["1"]
    import psycopg

    with psycopg.connect(postgresql) as conn:
        tables = [row[0] for row in conn.execute("select name from registered_models")]
    assert tables == [MODEL]
