"""`python -m serving` as a real process against a real `mlflow server`, with a model
registered by the training package: V2 over HTTP and gRPC through KServe's own clients,
the metrics after a known number of requests, and the registry outage behaviour."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    BIN_DIR,
    PYTHON,
    REPO_ROOT,
    MlflowServer,
    Process,
    RunningSink,
    free_port,
    http_ok,
    last_json,
    mlflow_server_args,
    start_process,
    wait_http_ok,
    wait_until,
)

pytestmark = pytest.mark.integration

SERVED_NAME = "breast-cancer"
ROWS = [
    [
        17.99,
        10.38,
        122.8,
        1001.0,
        0.1184,
        0.2776,
        0.3001,
        0.1471,
        0.2419,
        0.07871,
        1.095,
        0.9053,
        8.589,
        153.4,
        0.006399,
        0.04904,
        0.05373,
        0.01587,
        0.03003,
        0.006193,
        25.38,
        17.33,
        184.6,
        2019.0,
        0.1622,
        0.6656,
        0.7119,
        0.2654,
        0.4601,
        0.1189,
    ],
    [
        13.54,
        14.36,
        87.46,
        566.3,
        0.09779,
        0.08129,
        0.06664,
        0.04781,
        0.1885,
        0.05766,
        0.2699,
        0.7886,
        2.058,
        23.56,
        0.008462,
        0.0146,
        0.02387,
        0.01315,
        0.0198,
        0.0023,
        15.11,
        19.26,
        99.7,
        711.2,
        0.144,
        0.1773,
        0.239,
        0.1288,
        0.2977,
        0.07259,
    ],
]  # fmt: skip  (rows 0 and 19 of the Wisconsin set: malignant, benign)


@dataclass(frozen=True)
class Registered:
    server: MlflowServer
    name: str
    version: str
    run_id: str


def register_with_training(
    server: MlflowServer,
    name: str,
    log: Path,
    candidates: str = "logreg",
    extra: tuple[str, ...] = (),
) -> Registered:
    """`python -m training --smoke` registers a version and sets @champion on a new name."""
    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "training",
            "--tracking-uri",
            server.url,
            "--model-name",
            name,
            "--smoke",
            "--candidates",
            candidates,
            *extra,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, f"training failed:\n{result.stdout}\n{result.stderr}"
    summary = last_json(result.stdout)
    assert summary["status"] == "registered" and "champion" in summary["aliases_set"]
    return Registered(server, name, str(summary["version"]), summary["run_id"])


@pytest.fixture(scope="module")
def registered(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Registered:
    name = f"bc-serving-{uuid.uuid4().hex[:8]}"
    return register_with_training(
        mlflow_server, name, tmp_path_factory.mktemp("train") / "train.log"
    )


@dataclass
class Predictor:
    process: Process
    http: str
    grpc: str

    def get(self, path: str) -> requests.Response:
        return requests.get(self.http + path, timeout=10)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.http + path, timeout=10, **kwargs)

    def ready(self) -> bool:
        return http_ok(self.http + "/v2/health/ready")


def start_predictor(
    model_uri: str,
    tracking_uri: str,
    log: Path,
    flags: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Predictor:
    http_port, grpc_port = free_port(), free_port()
    process = start_process(
        [
            PYTHON,
            "-m",
            "serving",
            "--model_uri",
            model_uri,
            "--http_port",
            str(http_port),
            "--grpc_port",
            str(grpc_port),
            *flags,
        ],
        log,
        env={
            "MLFLOW_TRACKING_URI": tracking_uri,
            "MODEL_NAME": SERVED_NAME,
            "MAX_BATCH_SIZE": "32",
            "LOAD_RETRY_MAX_SECONDS": "1",
            **(env or {}),
        },
    )
    predictor = Predictor(process, f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}")
    wait_http_ok(process, predictor.http + "/v2/health/live", 120, "the predictor to listen")
    return predictor


@pytest.fixture(scope="module")
def predictor(
    registered: Registered, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Predictor]:
    log = tmp_path_factory.mktemp("predictor") / "predictor.log"
    running = start_predictor(f"models:/{registered.name}@champion", registered.server.url, log)
    try:
        wait_until(
            lambda: running.ready() or not running.process.alive(), 120, "the predictor to be ready"
        )
        assert running.ready(), running.process.log()
        yield running
    finally:
        running.process.stop()


def infer_body(rows: list[list[float]]) -> dict[str, Any]:
    return {
        "inputs": [{"name": "features", "shape": [len(rows), 30], "datatype": "FP64", "data": rows}]
    }


def scrape(predictor: Predictor) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(predictor.get("/metrics").text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_fetch_resolves_the_alias_to_its_version_and_downloads_it(
    registered: Registered, tmp_path: Path
) -> None:
    from serving.registry import FetchProcess, parse_model_uri

    ref = parse_model_uri(f"models:/{registered.name}@champion")
    fetched = FetchProcess(ref, registered.server.url, tmp_path, 10).result()

    assert (fetched.version, fetched.run_id) == (registered.version, registered.run_id)
    assert fetched.uri == f"models:/{registered.name}/{registered.version}"
    assert {"MLmodel", "model.skops"} <= {p.name for p in fetched.path.iterdir()}


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/{name}@nope", "alias @nope of registered model '{name}' does not exist"),
        ("models:/{name}/99", "version 99 of registered model '{name}' does not exist"),
        ("models:/{name}-other/1", "version 1 of registered model '{name}-other' does not exist"),
    ],
)
def test_fetch_names_what_is_missing(
    registered: Registered, tmp_path: Path, uri: str, expected: str
) -> None:
    from serving.errors import ModelVersionMissing
    from serving.registry import fetch, parse_model_uri

    ref = parse_model_uri(uri.format(name=registered.name))
    with pytest.raises(ModelVersionMissing) as caught:
        fetch(ref, registered.server.url, tmp_path, 10)

    assert expected.format(name=registered.name) in caught.value.message
    assert registered.server.url in caught.value.message


def test_fetch_in_a_child_process_reports_an_unreachable_registry(tmp_path: Path) -> None:
    from serving.errors import RegistryUnavailable
    from serving.registry import FetchProcess, parse_model_uri

    url = f"http://127.0.0.1:{free_port()}"
    pending = FetchProcess(parse_model_uri("models:/breast-cancer/1"), url, tmp_path, 5)

    with pytest.raises(
        RegistryUnavailable, match=f"the registry at {url} failed: connection refused"
    ):
        pending.result()


def test_a_prefetch_serves_the_first_load_and_leaves_no_folder(registered: Registered) -> None:
    from serving.model import RegistryModel
    from serving.registry import Prefetch
    from serving.settings import Settings

    settings = Settings(
        model_uri=f"models:/{registered.name}@champion", tracking_uri=registered.server.url
    )
    url, timeout = registered.server.url, settings.registry_timeout_seconds
    prefetch = Prefetch(settings.model_ref, url, timeout)
    model = RegistryModel(settings, prefetch=prefetch)

    assert model.load() is True

    loaded = model.active().model
    assert (loaded.version, loaded.run_id) == (registered.version, registered.run_id)
    assert not Path(prefetch.folder.name).exists()


def test_v2_rest_with_kserve_client_returns_the_registered_version(
    predictor: Predictor, registered: Registered
) -> None:
    from kserve import InferenceRESTClient, RESTConfig
    from kserve.protocol.infer_type import InferInput, InferRequest

    async def call() -> Any:
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        tensor = InferInput("features", [2, 30], "FP64", data=ROWS)
        try:
            return await client.infer(
                predictor.http, InferRequest(SERVED_NAME, [tensor]), model_name=SERVED_NAME
            )
        finally:
            await client.close()

    response = asyncio.run(call())
    # KServe's REST client drops `model_version` when it parses (InferResponse.from_bytes):
    # read it from the wire as well.
    raw = predictor.post(f"/v2/models/{SERVED_NAME}/infer", json=infer_body(ROWS)).json()

    assert response.model_name == SERVED_NAME
    assert raw["model_version"] == registered.version
    by_name = {o.name: o for o in response.outputs}
    assert by_name["label"].as_numpy().tolist() == [0, 1]
    assert by_name["class_name"].data == ["malignant", "benign"]
    assert by_name["probabilities"].as_numpy().shape == (2, 2)


def grpc_infer(predictor: Predictor) -> Any:
    """ROWS through KServe's gRPC client, once the server and model say they are ready."""
    from kserve import InferenceGRPCClient
    from kserve.protocol.infer_type import InferInput, InferRequest

    async def call() -> Any:
        tensor = InferInput("features", [2, 30], "FP64")
        tensor.set_data_from_numpy(np.array(ROWS), binary_data=True)
        async with InferenceGRPCClient(predictor.grpc, timeout=30) as client:
            assert await client.is_server_ready()
            assert await client.is_model_ready(SERVED_NAME)
            return await client.infer(InferRequest(SERVED_NAME, [tensor], request_id="it-1"))

    return asyncio.run(call())


def test_v2_grpc_with_kserve_client_returns_the_registered_version(
    predictor: Predictor, registered: Registered
) -> None:
    response = grpc_infer(predictor)

    assert (response.model_version, response.id) == (registered.version, "it-1")
    labels = {o.name: o for o in response.outputs}["label"]
    assert labels.as_numpy().tolist() == [0, 1]


def test_the_predictor_runs_on_asyncio_s_loop_by_default(predictor: Predictor) -> None:
    assert "event loop: asyncio.unix_events._UnixSelectorEventLoop" in predictor.process.log()


def test_on_uvloop_when_asked_the_predictor_serves_rest_and_grpc(
    registered: Registered, tmp_path: Path
) -> None:
    predictor = start_predictor(
        f"models:/{registered.name}@champion",
        registered.server.url,
        tmp_path / "p.log",
        flags=("--event-loop", "uvloop"),
    )
    try:
        wait_until(
            lambda: predictor.ready() or not predictor.process.alive(), 120, "the predictor ready"
        )
        assert "event loop: uvloop.Loop" in predictor.process.log()
        response = predictor.post(f"/v2/models/{SERVED_NAME}/infer", json=infer_body(ROWS))
        assert response.status_code == 200
        assert response.json()["model_version"] == registered.version
        assert grpc_infer(predictor).model_version == registered.version
    finally:
        predictor.process.stop()


def test_metadata_names_the_version_and_run(predictor: Predictor, registered: Registered) -> None:
    body = predictor.get(f"/v2/models/{SERVED_NAME}").json()

    assert body["versions"] == [registered.version]
    assert body["parameters"]["model_uri"] == f"models:/{registered.name}/{registered.version}"
    assert body["parameters"]["run_id"] == registered.run_id
    assert body["inputs"] == [{"name": "features", "datatype": "FP64", "shape": [-1, 30]}]


def test_metrics_count_a_known_number_of_ok_and_invalid_requests(
    predictor: Predictor, registered: Registered
) -> None:
    version = registered.version
    base = (("model_name", SERVED_NAME), ("model_version", version))

    def requests_total(samples: dict[Any, float], protocol: str, outcome: str) -> float:
        labels = tuple(sorted((*base, ("protocol", protocol), ("outcome", outcome))))
        return samples.get(("inference_requests_total", labels), 0.0)

    def predictions(samples: dict[Any, float], class_name: str) -> float:
        labels = tuple(sorted((*base, ("class_name", class_name))))
        return samples.get(("inference_predictions_total", labels), 0.0)

    before = scrape(predictor)
    for _ in range(4):
        assert (
            predictor.post(f"/v2/models/{SERVED_NAME}/infer", json=infer_body(ROWS)).status_code
            == 200
        )
    invalid = [
        b"not json",
        json.dumps(infer_body([ROWS[0][:29]])).encode(),
        json.dumps(infer_body(ROWS * 17)).encode(),  # 34 rows > MAX_BATCH_SIZE=32
    ]
    for body in invalid:
        assert predictor.post(f"/v2/models/{SERVED_NAME}/infer", data=body).status_code == 400
    assert (
        predictor.post(f"/v1/models/{SERVED_NAME}:predict", json={"instances": ROWS}).status_code
        == 200
    )
    after = scrape(predictor)

    assert requests_total(after, "rest", "ok") - requests_total(before, "rest", "ok") == 4
    assert requests_total(after, "rest", "invalid") - requests_total(before, "rest", "invalid") == 3
    assert requests_total(after, "rest", "error") - requests_total(before, "rest", "error") == 0
    assert requests_total(after, "v1", "ok") - requests_total(before, "v1", "ok") == 1
    assert predictions(after, "malignant") - predictions(before, "malignant") == 5
    assert predictions(after, "benign") - predictions(before, "benign") == 5
    duration_count = (
        "inference_request_duration_seconds_count",
        tuple(sorted((*base, ("protocol", "rest")))),
    )
    assert after[duration_count] - before.get(duration_count, 0.0) == 7
    info = tuple(
        sorted(
            (
                *base,
                ("model_uri", f"models:/{registered.name}/{version}"),
                ("run_id", registered.run_id),
                # Trained by this project: its ONNX copy passed parity.
                ("runtime", "onnx"),
            )
        )
    )
    assert after[("inference_model_info", info)] == 1.0


def test_a_missing_alias_keeps_the_predictor_alive_not_ready_with_a_clear_log(
    registered: Registered, tmp_path: Path
) -> None:
    predictor = start_predictor(
        f"models:/{registered.name}@nope", registered.server.url, tmp_path / "p.log"
    )
    expected = (
        f"waiting for models:/{registered.name}@nope: "
        f"alias @nope of registered model '{registered.name}' does not exist"
    )
    try:
        wait_until(lambda: predictor.process.log().count(expected) >= 2, 120, "two load attempts")

        assert predictor.process.alive()
        assert predictor.get("/v2/health/live").status_code == 200
        assert predictor.get("/v2/health/ready").status_code == 503
        assert predictor.get(f"/v2/models/{SERVED_NAME}/ready").status_code == 503
        response = predictor.post(f"/v2/models/{SERVED_NAME}/infer", json=infer_body(ROWS))
        assert response.status_code == 503
        assert expected.split(": ", 1)[1] in response.json()["error"]
    finally:
        predictor.process.stop()


def test_a_predictor_started_during_a_registry_outage_turns_ready_when_it_returns(
    registered: Registered, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    predictor = start_predictor(f"models:/{registered.name}@champion", url, tmp_path / "p.log")
    registry: Process | None = None
    try:
        waiting = f"the registry at {url} failed: connection refused"
        wait_until(lambda: predictor.process.log().count(waiting) >= 2, 120, "two failed attempts")
        assert predictor.get("/v2/health/live").status_code == 200
        assert predictor.get("/v2/health/ready").status_code == 503
        assert predictor.get(f"/v2/models/{SERVED_NAME}/ready").status_code == 503

        # The registry comes up on that port (the same store the model was trained into).
        root = registered.server.root
        env = {"PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"}
        registry = start_process(mlflow_server_args(root, port), tmp_path / "mlflow.log", env=env)
        wait_http_ok(registry, f"{url}/health", 120, "mlflow on the port")

        wait_until(
            lambda: predictor.ready() or not predictor.process.alive(),
            120,
            "the predictor to turn ready",
        )
        response = predictor.post(f"/v2/models/{SERVED_NAME}/infer", json=infer_body(ROWS))
        assert response.status_code == 200
        assert response.json()["model_version"] == registered.version
    finally:
        predictor.process.popen.send_signal(signal.SIGTERM)
        try:
            exit_code = predictor.process.popen.wait(30)
        finally:
            predictor.process.stop()
            if registry is not None:
                registry.stop()
    assert exit_code == 0, predictor.process.log()


def test_with_logger_url_each_answered_exchange_is_stored_once_in_the_prediction_log(
    registered: Registered, sink: RunningSink, tmp_path: Path
) -> None:
    from tests.predictionlog.events import rows

    running = start_predictor(
        f"models:/{registered.name}@champion",
        registered.server.url,
        tmp_path / "predictor.log",
        env={"LOGGER_URL": f"{sink.url}/", "LOGGER_MODE": "all"},
    )
    try:
        wait_until(running.ready, 120, "the predictor to be ready")
        ids = [f"exchange-{uuid.uuid4().hex[:10]}" for _ in range(5)]
        for event_id in ids:
            answer = running.post(
                f"/v2/models/{SERVED_NAME}/infer",
                json=infer_body(ROWS),
                headers={"ce-id": event_id},
            )
            assert answer.status_code == 200
        refused = running.post(
            f"/v2/models/{SERVED_NAME}/infer", data=b"not json", headers={"ce-id": f"{ids[0]}-bad"}
        )
        assert refused.status_code == 400

        def stored() -> list[dict[str, Any]]:
            return rows(sink.database_url, "id LIKE %s", (f"{ids[0][:9]}%",))

        wait_until(
            lambda: len([r for r in stored() if r["id"] in ids and r["response"]]) == len(ids),
            30,
            "the predictor's events in the prediction log",
        )
        samples = scrape(running)
    finally:
        running.process.stop()

    found = [r for r in stored() if r["id"] in ids or r["id"] == f"{ids[0]}-bad"]
    assert sorted(r["id"] for r in found) == sorted(ids)  # each once; the 400 not at all
    for row in found:
        assert row["model_version"] == registered.version
        assert row["request"] == infer_body(ROWS)
        assert [o["name"] for o in row["response"]["outputs"]] == [
            "label",
            "probabilities",
            "class_name",
        ]
        assert 0 <= row["latency_seconds"] < 5
    assert samples[("inference_payload_log_events_total", (("outcome", "sent"),))] == 10
    assert samples.get(("inference_payload_log_events_total", (("outcome", "dropped"),)), 0) == 0


def test_with_the_sink_down_requests_are_answered_and_the_failed_posts_counted(
    registered: Registered, tmp_path: Path
) -> None:
    running = start_predictor(
        f"models:/{registered.name}@champion",
        registered.server.url,
        tmp_path / "predictor.log",
        env={"LOGGER_URL": f"http://127.0.0.1:{free_port()}/", "LOGGER_MODE": "request"},
    )
    try:
        wait_until(running.ready, 120, "the predictor to be ready")
        statuses = [
            running.post(f"/v2/models/{SERVED_NAME}/infer", json=infer_body(ROWS)).status_code
            for _ in range(3)
        ]
        failed = ("inference_payload_log_events_total", (("outcome", "failed"),))
        wait_until(lambda: scrape(running).get(failed) == 3, 30, "three failed posts counted")
    finally:
        running.process.stop()
    assert statuses == [200] * 3
    assert "did not take an event" in running.process.log()
