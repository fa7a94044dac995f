"""KServe's app with the predictor's routes, in-process: V2 and V1 over HTTP, every
malformed request a 4xx with a message, metadata from the signature, metrics."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from tests.serving.conftest import MODEL_NAME, Data, predictor_app

INFER = f"/v2/models/{MODEL_NAME}/infer"


def v2_body(rows: np.ndarray[Any, Any], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "features",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.tolist(),
            }
        ],
        **extra,
    }


def outputs(response: Any) -> dict[str, Any]:
    return {o["name"]: o for o in response.json()["outputs"]}


@pytest.mark.parametrize("family", ["logreg", "forest"])
def test_v2_infer_returns_label_probabilities_class_name_and_version(
    family: str, serving_model_factory: Callable[..., Any], serving_data: Data
) -> None:
    model = serving_model_factory(family)
    rows = serving_data.x[:4]
    expected = model.active().model.estimator.predict_proba(rows)

    with TestClient(predictor_app(model)) as client:
        response = client.post(INFER, json=v2_body(rows, id="req-1"))

    assert response.status_code == 200
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == (MODEL_NAME, "3", "req-1")
    tensors = outputs(response)
    assert tensors["label"] == {
        "name": "label",
        "datatype": "INT64",
        "shape": [4],
        "data": expected.argmax(axis=1).tolist(),
    }
    assert tensors["probabilities"]["shape"] == [4, 2]
    np.testing.assert_allclose(tensors["probabilities"]["data"], expected.ravel())
    assert tensors["class_name"]["data"] == [
        serving_data.class_names[i] for i in expected.argmax(axis=1)
    ]


def test_v2_infer_accepts_one_tensor_per_column(
    serving_client: TestClient, serving_data: Data
) -> None:
    rows = serving_data.x[:2]
    inputs = [
        {"name": name, "shape": [2], "datatype": "FP32", "data": rows[:, j].tolist()}
        for j, name in enumerate(serving_data.feature_names)
    ]

    by_columns = serving_client.post(INFER, json={"inputs": inputs})
    by_matrix = serving_client.post(INFER, json=v2_body(rows))

    assert by_columns.status_code == 200
    assert outputs(by_columns)["label"] == outputs(by_matrix)["label"]


def test_a_request_naming_outputs_gets_only_those(
    serving_client: TestClient, serving_data: Data
) -> None:
    response = serving_client.post(
        INFER, json=v2_body(serving_data.x[:1], outputs=[{"name": "class_name"}])
    )

    assert response.status_code == 200
    assert [o["name"] for o in response.json()["outputs"]] == ["class_name"]


def test_the_versioned_route_answers_for_the_loaded_version_only(
    serving_client: TestClient, serving_data: Data
) -> None:
    ok = serving_client.post(
        f"/v2/models/{MODEL_NAME}/versions/3/infer", json=v2_body(serving_data.x[:1])
    )
    other = serving_client.post(
        f"/v2/models/{MODEL_NAME}/versions/9/infer", json=v2_body(serving_data.x[:1])
    )

    assert ok.status_code == 200
    assert other.status_code == 404
    assert other.json() == {
        "error": "version '9' of 'breast-cancer' is not loaded here; the loaded version is 3"
    }


def test_binary_tensor_extension_is_understood(
    serving_client: TestClient, serving_data: Data
) -> None:
    from kserve.protocol.infer_type import InferInput, InferRequest

    tensor = InferInput("features", [2, 30], "FP64")
    tensor.set_data_from_numpy(serving_data.x[:2], binary_data=True)
    body, json_length = InferRequest(MODEL_NAME, [tensor], request_id="bin").to_rest()

    response = serving_client.post(
        INFER,
        content=body,
        headers={
            "inference-header-content-length": str(json_length),
            "content-type": "application/octet-stream",
        },
    )

    assert response.status_code == 200
    assert response.json()["model_version"] == "3"
    assert outputs(response)["label"]["shape"] == [2]


def test_v1_instances_route_predicts_with_version(
    serving_client: TestClient, serving_data: Data
) -> None:
    response = serving_client.post(
        f"/v1/models/{MODEL_NAME}:predict", json={"instances": serving_data.x[:2].tolist()}
    )

    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == "3"
    assert [p["class_name"] for p in body["predictions"]] == ["malignant", "malignant"]
    assert len(body["predictions"][0]["probabilities"]) == 2


def test_metadata_lists_the_version_and_the_signature(
    serving_client: TestClient, serving_data: Data
) -> None:
    response = serving_client.get(f"/v2/models/{MODEL_NAME}")

    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("name", "versions", "platform", "inputs", "outputs")} == {
        "name": MODEL_NAME,
        "versions": ["3"],
        "platform": "scikit-learn",
        "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, 30]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
            {"name": "class_name", "datatype": "BYTES", "shape": [-1]},
        ],
    }
    assert body["parameters"]["feature_names"] == serving_data.feature_names
    assert body["parameters"]["class_names"] == ["malignant", "benign"]
    assert body["parameters"]["model_uri"] == "models:/breast-cancer/3"


def test_health_and_readiness_when_loaded(serving_client: TestClient) -> None:
    assert serving_client.get("/v2/health/live").status_code == 200
    assert serving_client.get("/v2/health/ready").json() == {"ready": True}
    assert serving_client.get(f"/v2/models/{MODEL_NAME}/ready").json() == {
        "name": MODEL_NAME,
        "ready": True,
    }
    assert serving_client.get("/v2").json()["name"] == "kserve"


def test_the_versioned_ready_route_knows_the_loaded_version(serving_client: TestClient) -> None:
    loaded = serving_client.get(f"/v2/models/{MODEL_NAME}/versions/3/ready")
    other = serving_client.get(f"/v2/models/{MODEL_NAME}/versions/2/ready")

    assert (loaded.status_code, loaded.json()) == (200, {"name": MODEL_NAME, "ready": True})
    assert other.status_code == 404


def nan_body() -> bytes:
    data = ", ".join(["NaN"] + ["1.0"] * 29)
    tensor = f'{{"name": "features", "shape": [1, 30], "datatype": "FP64", "data": [{data}]}}'
    return f'{{"inputs": [{tensor}]}}'.encode()


def features(
    data: Any, shape: list[int], datatype: str = "FP64", name: str = "features"
) -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


ROW = [1.0] * 30
MALFORMED: list[tuple[str, str, bytes | dict[str, Any], int, str]] = [
    ("invalid JSON", INFER, b'{"inputs": [', 400, "the request body is not valid JSON"),
    ("missing inputs", INFER, {"input": []}, 400, "the request has no 'inputs'"),
    (
        "unknown tensor",
        INFER,
        features(ROW, [1, 30], name="pixels"),
        400,
        "unknown input tensor 'pixels'",
    ),
    (
        "wrong datatype",
        INFER,
        features(ROW, [1, 30], datatype="BYTES"),
        400,
        "datatype 'BYTES'; expected FP32 or FP64",
    ),
    ("shape vs data", INFER, features(ROW, [2, 30]), 400, "needs 60 values, but its data holds 30"),
    ("feature count", INFER, features(ROW[:29], [1, 29]), 400, "shape [1, 29]; expected [N, 30]"),
    ("NaN", INFER, nan_body(), 400, "is nan: every value must be a finite number"),
    (
        "infinity",
        INFER,
        features([1e400, *ROW[1:]], [1, 30]),
        400,
        "is inf: every value must be a finite number",
    ),
    ("empty batch", INFER, features([], [0, 30]), 400, "the batch is empty"),
    (
        "batch above maximum",
        INFER,
        features([ROW] * 65, [65, 30]),
        400,
        "65 rows, more than this server's maximum of 64",
    ),
    (
        "unknown model",
        "/v2/models/iris/infer",
        features(ROW, [1, 30]),
        404,
        "model 'iris' is not served here",
    ),
    ("V1 invalid JSON", f"/v1/models/{MODEL_NAME}:predict", b"{", 400, "invalid request"),
    (
        "V1 no instances",
        f"/v1/models/{MODEL_NAME}:predict",
        {"rows": [ROW]},
        400,
        "a V1 request needs 'instances'",
    ),
    (
        "V1 unknown model",
        "/v1/models/iris:predict",
        {"instances": [ROW]},
        404,
        "iris does not exist",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_requests_are_4xx_with_what_was_wrong(
    serving_client: TestClient, serving_data: Data, path: str, body: Any, status: int, message: str
) -> None:
    if isinstance(body, bytes):
        response = serving_client.post(
            path, content=body, headers={"content-type": "application/json"}
        )
    else:
        response = serving_client.post(path, content=json.dumps(body).encode())

    assert response.status_code == status
    assert list(response.json()) == ["error"]
    assert message in response.json()["error"]
    # ... and the server keeps serving.
    assert serving_client.post(INFER, json=v2_body(serving_data.x[:1])).status_code == 200


def test_a_body_above_the_limit_is_refused_from_its_content_length(
    serving_client: TestClient,
) -> None:
    response = serving_client.post(INFER, content=b" " * (64 * 1024 + 1))

    assert response.status_code == 413
    assert "exceeds this server's limit of 65536 bytes (MAX_BODY_BYTES)" in response.json()["error"]


def test_a_chunked_body_above_the_limit_is_refused_while_streaming(
    serving_client: TestClient,
) -> None:
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            sent.append(1)
            yield b" " * 4096

    response = serving_client.post(INFER, content=chunks())

    assert response.status_code == 413
    assert "more than 65536 bytes" in response.json()["error"]


def test_requests_are_counted_by_outcome_with_model_labels(
    serving_client: TestClient, serving_data: Data
) -> None:
    def count(outcome: str) -> float:
        labels = {
            "model_name": MODEL_NAME,
            "model_version": "3",
            "protocol": "rest",
            "outcome": outcome,
        }
        return REGISTRY.get_sample_value("inference_requests_total", labels) or 0.0

    def predicted(class_name: str) -> float:
        labels = {"model_name": MODEL_NAME, "model_version": "3", "class_name": class_name}
        return REGISTRY.get_sample_value("inference_predictions_total", labels) or 0.0

    before = {o: count(o) for o in ("ok", "invalid", "error")}
    malignant, benign = predicted("malignant"), predicted("benign")
    rows = serving_data.x[:10]
    labels = serving_client.post(INFER, json=v2_body(rows)).json()["outputs"][0]["data"]
    for _ in range(2):
        serving_client.post(INFER, json=v2_body(serving_data.x[:1]))
    for body in (b"{", b'{"inputs": 1}'):
        serving_client.post(INFER, content=body)
    serving_client.post(INFER, content=b" " * (64 * 1024 + 1))
    exposition = serving_client.get("/metrics").text

    assert {o: count(o) - before[o] for o in before} == {"ok": 3.0, "invalid": 3.0, "error": 0.0}
    assert predicted("malignant") - malignant == labels.count(0) + 2
    assert predicted("benign") - benign == labels.count(1)
    assert (
        'inference_batch_size_bucket{le="16.0",model_name="breast-cancer",model_version="3"}'
        in exposition
    )
    assert "request_predict_seconds_count" in exposition  # KServe's own histogram stays


def test_before_the_model_loads_the_server_is_alive_but_not_ready(
    serving_model_factory: Callable[..., Any], serving_data: Data
) -> None:
    model = serving_model_factory("logreg", load=False)
    model.waiting_for = (
        "models:/breast-cancer/3: the registry at http://mlflow:5000 failed: connection refused"
    )

    with TestClient(predictor_app(model)) as client:
        live = client.get("/v2/health/live")
        ready = client.get("/v2/health/ready")
        model_ready = client.get(f"/v2/models/{MODEL_NAME}/ready")
        infer = client.post(INFER, json=v2_body(serving_data.x[:1]))
        metadata = client.get(f"/v2/models/{MODEL_NAME}")

    assert live.status_code == 200
    assert (ready.status_code, model_ready.status_code, metadata.status_code) == (503, 503, 503)
    assert infer.status_code == 503
    assert infer.json() == {
        "error": "model 'breast-cancer' is not ready: waiting for models:/breast-cancer/3: "
        "the registry at http://mlflow:5000 failed: connection refused"
    }


def test_unknown_routes_answer_in_the_same_error_shape(serving_client: TestClient) -> None:
    response = serving_client.get("/v3/nothing")

    assert (response.status_code, response.json()) == (404, {"error": "Not Found"})
