"""Every V2 client against a real `python -m serving`: NVIDIA's Triton clients (HTTP and
gRPC) and KServe's own (REST and gRPC), JSON and the binary tensor extension both ways,
FP32 and FP64 batches of 1, 4 and 256 rows, each answer equal to scikit-learn's
`predict_proba` on the same rows. Every JSON response recorded here is validated against
the Open Inference Protocol's REST schema (`OIP_REST_SCHEMA`, see docs/serving.md)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings

from tests.serving.test_predictor_process import (
    SERVED_NAME,
    Predictor,
    Registered,
    register_with_training,
    start_predictor,
)
from tests.support import PYTHON, wait_until

pytestmark = pytest.mark.integration

SIZES = (1, 4, 256)


@pytest.fixture(scope="module")
def served(
    mlflow_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Predictor, Registered, Any]]:
    """A predictor serving a version the training package registered, and the same
    estimator loaded here to compare with."""
    from serving.loader import load_model_dir
    from serving.registry import FetchProcess, parse_model_uri

    folder = tmp_path_factory.mktemp("clients")
    registered = register_with_training(
        mlflow_server, f"bc-clients-{os.getpid()}", folder / "train.log"
    )
    ref = parse_model_uri(f"models:/{registered.name}/{registered.version}")
    fetched = FetchProcess(ref, registered.server.url, folder / "model", 30).result()
    estimator = load_model_dir(
        fetched.path, fetched.version, fetched.run_id, fetched.uri, runtime="sklearn"
    )
    predictor = start_predictor(
        f"models:/{registered.name}@champion",
        registered.server.url,
        folder / "predictor.log",
        # scikit-learn's runtime, so its answers can equal predict_proba to the bit.
        env={
            "MAX_BATCH_SIZE": "256",
            "MAX_BODY_BYTES": str(8 * 1024 * 1024),
            "MODEL_RUNTIME": "sklearn",
        },
    )
    try:
        wait_until(lambda: predictor.ready() or not predictor.process.alive(), 120, "the predictor")
        assert predictor.ready(), predictor.process.log()
        yield predictor, registered, estimator.estimator
    finally:
        predictor.process.stop()


def rows(n: int) -> np.ndarray[Any, Any]:
    from sklearn.datasets import load_breast_cancer

    return np.asarray(load_breast_cancer().data[:n], dtype=np.float64)


def expected(estimator: Any, x: np.ndarray[Any, Any], datatype: str) -> np.ndarray[Any, Any]:
    sent = x.astype(np.float32) if datatype == "FP32" else x
    return np.asarray(estimator.predict_proba(sent.astype(np.float64)))


def numpy_dtype(datatype: str) -> type[np.floating[Any]]:
    return np.float32 if datatype == "FP32" else np.float64


# --- Triton's clients ----------------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
@pytest.mark.parametrize("binary_in", [False, True], ids=["json-in", "binary-in"])
@pytest.mark.parametrize("binary_out", [False, True], ids=["json-out", "binary-out"])
def test_triton_http_client_infers_every_way(
    served: tuple[Predictor, Registered, Any],
    n: int,
    datatype: str,
    binary_in: bool,
    binary_out: bool,
) -> None:
    import tritonclient.http as triton

    predictor, _, estimator = served
    x = rows(n)
    tensor = triton.InferInput("features", [n, 30], datatype)
    tensor.set_data_from_numpy(x.astype(numpy_dtype(datatype)), binary_data=binary_in)
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary_out)
        for name in ("label", "probabilities", "class_name")
    ]
    client = triton.InferenceServerClient(predictor.http.removeprefix("http://"))
    try:
        result = client.infer(SERVED_NAME, [tensor], outputs=outputs, request_id=f"t-{n}")
    finally:
        client.close()

    want = expected(estimator, x, datatype)
    response = result.get_response()
    assert response["id"] == f"t-{n}"
    np.testing.assert_array_equal(result.as_numpy("probabilities"), want)
    np.testing.assert_array_equal(result.as_numpy("label"), want.argmax(axis=1))
    names = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("class_name")]
    assert names == [("malignant", "benign")[i] for i in want.argmax(axis=1)]


def test_triton_http_client_health_metadata_and_errors(
    served: tuple[Predictor, Registered, Any],
) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    predictor, registered, _ = served
    client = triton.InferenceServerClient(predictor.http.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(SERVED_NAME)
        assert client.is_model_ready(SERVED_NAME, registered.version)
        metadata = client.get_model_metadata(SERVED_NAME)
        versioned = client.get_model_metadata(SERVED_NAME, registered.version)
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        tensor = triton.InferInput("features", [1, 30], "FP64")
        tensor.set_data_from_numpy(rows(1))
        with pytest.raises(InferenceServerException) as unknown:
            client.infer("iris", [tensor])
        wrong = triton.InferInput("features", [1, 29], "FP64")
        wrong.set_data_from_numpy(rows(1)[:, :29])
        with pytest.raises(InferenceServerException) as shape:
            client.infer(SERVED_NAME, [wrong])
    finally:
        client.close()

    assert metadata == versioned
    assert metadata["versions"] == [registered.version]
    assert [o["name"] for o in metadata["outputs"]] == ["label", "probabilities", "class_name"]
    assert unknown.value.status() == "404"
    assert "not served here" in unknown.value.message()
    assert shape.value.status() == "400"
    assert "expected [N, 30]" in shape.value.message()


# Triton's gRPC stubs and KServe's register the same protobuf names ("inference.*") in
# one global descriptor pool, so one process can import only one of them: Triton's
# client runs in a child process of its own, which prints what it got as JSON.
TRITON_GRPC_CALLS = """
import json, sys
import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

address, model, version, n, datatype = sys.argv[1:6]
x = np.asarray(json.loads(sys.stdin.read()), dtype=datatype == "FP32" and np.float32 or np.float64)
client = triton.InferenceServerClient(address)

def status(call):
    try:
        call()
    except InferenceServerException as e:
        return e.status()
    return "OK"

tensor = triton.InferInput("features", list(x.shape), datatype)
tensor.set_data_from_numpy(x)
short = triton.InferInput("features", [x.shape[0], 29], datatype)
short.set_data_from_numpy(np.ascontiguousarray(x[:, :29]))
result = client.infer(model, [tensor], request_id="g-1")
print(json.dumps({
    "live": client.is_server_live(),
    "ready": client.is_server_ready() and client.is_model_ready(model),
    "versions": client.get_model_metadata(model, version, as_json=True)["versions"],
    "id": result.get_response().id,
    "probabilities": result.as_numpy("probabilities").tolist(),
    "label": result.as_numpy("label").tolist(),
    "class_name": [v.decode() for v in result.as_numpy("class_name")],
    "unknown_model": status(lambda: client.infer("iris", [tensor])),
    "wrong_shape": status(lambda: client.infer(model, [short])),
}))
"""


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_triton_grpc_client_reads_raw_output_contents(
    served: tuple[Predictor, Registered, Any], n: int, datatype: str
) -> None:
    predictor, registered, estimator = served
    x = rows(n)
    args = [predictor.grpc, SERVED_NAME, registered.version, str(n), datatype]
    done = subprocess.run(
        [PYTHON, "-c", TRITON_GRPC_CALLS, *args],
        input=json.dumps(x.tolist()),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)

    want = expected(estimator, x, datatype)
    assert (got["live"], got["ready"], got["versions"]) == (True, True, [registered.version])
    assert got["id"] == "g-1"
    np.testing.assert_array_equal(np.asarray(got["probabilities"]), want)
    assert got["label"] == want.argmax(axis=1).tolist()
    assert got["class_name"] == [("malignant", "benign")[i] for i in want.argmax(axis=1)]
    assert (got["unknown_model"], got["wrong_shape"]) == (
        "StatusCode.NOT_FOUND",
        "StatusCode.INVALID_ARGUMENT",
    )


# --- KServe's clients ----------------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_kserve_rest_client_infers_json_and_binary(
    served: tuple[Predictor, Registered, Any], n: int, binary: bool
) -> None:
    from kserve import InferenceRESTClient, RESTConfig
    from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

    predictor, _, estimator = served
    x = rows(n)
    tensor = InferInput("features", [n, 30], "FP64")
    tensor.set_data_from_numpy(x, binary_data=binary)
    request = InferRequest(
        SERVED_NAME,
        [tensor],
        request_id="k-1",
        request_outputs=[RequestedOutput("probabilities", {"binary_data": binary})],
    )

    async def call() -> Any:
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            return await client.infer(predictor.http, request, model_name=SERVED_NAME)
        finally:
            await client.close()

    response = asyncio.run(call())

    # KServe's client drops model_version when it parses a REST answer
    # (`InferResponse.from_bytes`), so only the id is compared here.
    assert response.id == "k-1"
    assert [o.name for o in response.outputs] == ["probabilities"]
    np.testing.assert_array_equal(response.outputs[0].as_numpy(), expected(estimator, x, "FP64"))


def test_kserve_clients_see_the_server_live_and_the_model_ready(
    served: tuple[Predictor, Registered, Any],
) -> None:
    """KServe's clients have no metadata calls; their health calls, REST and gRPC."""
    from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig

    predictor, _, _ = served

    async def call() -> list[bool]:
        rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            answers = [
                await rest.is_server_live(predictor.http),
                await rest.is_server_ready(predictor.http),
                await rest.is_model_ready(predictor.http, SERVED_NAME),
            ]
        finally:
            await rest.close()
        async with InferenceGRPCClient(predictor.grpc) as grpc_client:
            answers += [
                await grpc_client.is_server_live(),
                await grpc_client.is_server_ready(),
                await grpc_client.is_model_ready(SERVED_NAME),
            ]
        return answers

    assert asyncio.run(call()) == [True] * 6


def test_kserve_grpc_client_infers_and_reports_errors(
    served: tuple[Predictor, Registered, Any],
) -> None:
    import grpc
    from kserve import InferenceGRPCClient
    from kserve.protocol.infer_type import InferInput, InferRequest

    predictor, registered, estimator = served
    x = rows(4)

    def request(model: str, data: np.ndarray[Any, Any]) -> InferRequest:
        tensor = InferInput("features", list(data.shape), "FP64")
        tensor.set_data_from_numpy(data)
        return InferRequest(model, [tensor], request_id="kg-1")

    async def call() -> tuple[Any, Any, Any]:
        async with InferenceGRPCClient(predictor.grpc) as client:
            ok = await client.infer(request(SERVED_NAME, x))
            errors = []
            for bad in (request("iris", x), request(SERVED_NAME, x[:, :29])):
                try:
                    await client.infer(bad)
                except grpc.aio.AioRpcError as e:
                    errors.append(e.code())
            return ok, errors[0], errors[1]

    ok, unknown, shape = asyncio.run(call())

    assert (ok.id, ok.model_version) == ("kg-1", registered.version)
    by_name = {o.name: o for o in ok.outputs}
    np.testing.assert_array_equal(
        by_name["probabilities"].as_numpy(), expected(estimator, x, "FP64")
    )
    assert (unknown, shape) == (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


# --- the protocol's own schema -------------------------------------------------------------


def test_recorded_responses_conform_to_the_open_inference_protocol_schema(
    served: tuple[Predictor, Registered, Any], oip_schema: Any
) -> None:
    predictor, registered, _ = served
    version = registered.version
    base = f"/v2/models/{SERVED_NAME}/versions/{version}"
    infer = f"/v2/models/{SERVED_NAME}/versions/{{MODEL_VERSION}}/infer"
    body = {
        "id": "s-1",
        "inputs": [
            {"name": "features", "shape": [4, 30], "datatype": "FP64", "data": rows(4).tolist()}
        ],
    }
    recorded = [
        ("/v2/health/live", "GET", predictor.get("/v2/health/live")),
        ("/v2/health/ready", "GET", predictor.get("/v2/health/ready")),
        ("/v2/", "GET", predictor.get("/v2/")),
        (
            f"/v2/models/{SERVED_NAME}/versions/{{MODEL_VERSION}}/ready",
            "GET",
            predictor.get(f"{base}/ready"),
        ),
        (f"/v2/models/{SERVED_NAME}/versions/{{MODEL_VERSION}}", "GET", predictor.get(base)),
        (infer, "POST", predictor.post(f"{base}/infer", json=body)),
        (infer, "POST", predictor.post(f"{base}/infer", json={"inputs": "nope"})),
        (infer, "POST", predictor.post(f"{base}/infer", data=b"{", headers=JSON_TYPE)),
    ]

    statuses = [response.status_code for _, _, response in recorded]
    assert statuses == [200, 200, 200, 200, 200, 200, 400, 400]
    for path, method, response in recorded:
        assert isinstance(response, requests.Response)
        oip_schema[path][method].validate_response(response)


JSON_TYPE = {"content-type": "application/json"}


# --- schemathesis over the schema ----------------------------------------------------------

UNDECLARED_BUT_ALLOWED = {404, 413, 503}
"""Statuses the schema declares for no operation: an unknown version (404), a body past
MAX_BODY_BYTES (413), not ready (503)."""


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    served: tuple[Predictor, Registered, Any], oip_schema: Any
) -> None:
    """Every operation of the schema, a bounded number of generated requests each (a
    fixed seed, so a failure repeats), within a time budget."""
    predictor, registered, _ = served
    seen: dict[str, set[int]] = {}
    deadline = time.monotonic() + 100
    for result in oip_schema.get_all_operations():
        operation = result.ok()
        statuses = seen.setdefault(f"{operation.method.upper()} {operation.path}", set())
        fuzz(operation, predictor.http, registered.version, statuses, deadline)()

    assert f"POST /v2/models/{SERVED_NAME}/versions/{{MODEL_VERSION}}/infer" in seen
    assert all(seen.values()), seen


def fuzz(operation: Any, base_url: str, version: str, statuses: set[int], deadline: float) -> Any:
    """A hypothesis test of one operation: the version pinned to the loaded one, each
    status one the schema declares or one of `UNDECLARED_BUT_ALLOWED`, each declared
    one checked by schemathesis."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    declared = {int(s) for s in operation.definition.raw.get("responses", {}) if s.isdigit()}

    @given(case=operation.as_strategy())
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        assert time.monotonic() < deadline, "the schemathesis run passed its time budget"
        if "MODEL_VERSION" in case.path_parameters:
            case.path_parameters["MODEL_VERSION"] = version
        response = case.call(base_url=base_url, timeout=10)
        statuses.add(response.status_code)
        assert response.status_code in declared | UNDECLARED_BUT_ALLOWED, (
            f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
        )
        if response.status_code in declared:
            case.validate_response(
                response, checks=[not_a_server_error, response_schema_conformance]
            )

    return run
