"""V2 over gRPC against the predictor's gRPC server, in-process on a free port, through
KServe's own client: same answers, same errors (as status codes) as REST."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from prometheus_client import REGISTRY

from tests.serving.conftest import MODEL_NAME, Data
from tests.support import free_port

T = TypeVar("T")


def serve(model: Any, call: Callable[[str], Awaitable[T]], max_receive_bytes: int = 64 * 1024) -> T:
    """Run the predictor's gRPC server around `call(address)`, then stop it."""
    from kserve.model_repository import ModelRepository
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension

    from serving.grpc_service import PredictorGRPCServer
    from serving.server import ReadyDataPlane

    async def main() -> T:
        repository = ModelRepository()
        repository.update(model)
        port = free_port()
        server = PredictorGRPCServer(
            port,
            ReadyDataPlane(model_registry=repository),
            ModelRepositoryExtension(model_registry=repository),
            model,
            max_receive_bytes=max_receive_bytes,
            grace_period=1,
        )
        task = asyncio.create_task(server.start(2))
        address = f"127.0.0.1:{port}"
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                await asyncio.wait_for(channel.channel_ready(), 20)
            return await call(address)
        finally:
            await server.stop()
            await asyncio.wait_for(task, 20)

    return asyncio.run(main())


def features_request(rows: np.ndarray[Any, Any], raw: bool = False, **kwargs: Any) -> Any:
    from kserve.protocol.infer_type import InferInput, InferRequest

    tensor = InferInput("features", list(rows.shape), "FP32")
    if raw:
        tensor.set_data_from_numpy(rows.astype(np.float32), binary_data=True)
    else:
        tensor.data = rows.astype(np.float32).ravel().tolist()
    return InferRequest(kwargs.pop("model_name", MODEL_NAME), [tensor], request_id="g-1", **kwargs)


@pytest.mark.parametrize("raw", [False, True], ids=["contents", "raw_contents"])
def test_grpc_infer_answers_like_rest(
    raw: bool, serving_model_factory: Callable[..., Any], serving_data: Data
) -> None:
    from kserve import InferenceGRPCClient

    model = serving_model_factory("logreg")
    rows = serving_data.x[:3]
    expected = model.active().model.estimator.predict_proba(
        rows.astype(np.float32).astype(np.float64)
    )

    async def call(address: str) -> Any:
        async with InferenceGRPCClient(address) as client:
            return await client.infer(features_request(rows, raw=raw))

    response = serve(model, call)

    assert (response.model_name, response.model_version, response.id) == (MODEL_NAME, "3", "g-1")
    by_name = {o.name: o for o in response.outputs}
    np.testing.assert_array_equal(by_name["label"].as_numpy(), expected.argmax(axis=1))
    np.testing.assert_allclose(by_name["probabilities"].as_numpy(), expected)
    assert [
        s.decode() if isinstance(s, bytes) else s for s in by_name["class_name"].as_numpy().ravel()
    ] == [serving_data.class_names[i] for i in expected.argmax(axis=1)]


def test_grpc_requested_outputs_and_metadata(
    serving_model_factory: Callable[..., Any], serving_data: Data
) -> None:
    model = serving_model_factory("logreg")

    async def call(address: str) -> tuple[Any, Any]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            request = features_request(serving_data.x[:1]).to_grpc()
            request.outputs.add(name="probabilities")
            inferred = await stub.ModelInfer(request)
            metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL_NAME))
            return inferred, metadata

    inferred, metadata = serve(model, call)

    assert [o.name for o in inferred.outputs] == ["probabilities"]
    assert list(metadata.versions) == ["3"]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("features", "FP64", [-1, 30])
    ]
    assert [t.name for t in metadata.outputs] == ["label", "probabilities", "class_name"]


def invalid_calls(
    serving_data: Data,
) -> list[tuple[str, pb.ModelInferRequest, grpc.StatusCode, str]]:
    def request(rows: np.ndarray[Any, Any], **kwargs: Any) -> pb.ModelInferRequest:
        return features_request(rows, **kwargs).to_grpc()

    wrong_count = request(serving_data.x[:1, :29])
    nan = request(serving_data.x[:1])
    nan.inputs[0].contents.fp32_contents[3] = float("nan")
    shape_mismatch = request(serving_data.x[:2])
    shape_mismatch.inputs[0].shape[0] = 3
    wrong_type = request(serving_data.x[:1])
    wrong_type.inputs[0].datatype = "BYTES"
    both_forms = request(serving_data.x[:1])
    both_forms.raw_input_contents.append(serving_data.x[0].astype("<f4").tobytes())
    columns = pb.ModelInferRequest(model_name=MODEL_NAME)
    for name in serving_data.feature_names:
        columns.inputs.add(name=name, datatype="FP64", shape=[-1]).contents.fp64_contents.append(1)
    out_of_range = pb.ModelInferRequest(model_name=MODEL_NAME)
    tensor = out_of_range.inputs.add(name="features", datatype="INT8", shape=[1, 30])
    tensor.contents.int_contents.extend([1000] * 30)
    return [
        (
            "typed and raw contents",
            both_forms,
            grpc.StatusCode.INVALID_ARGUMENT,
            "send every input one way",
        ),
        ("columns of shape [-1]", columns, grpc.StatusCode.INVALID_ARGUMENT, "not -1"),
        ("INT8 given 1000", out_of_range, grpc.StatusCode.INVALID_ARGUMENT, "beyond the range"),
        ("wrong feature count", wrong_count, grpc.StatusCode.INVALID_ARGUMENT, "expected [N, 30]"),
        ("NaN", nan, grpc.StatusCode.INVALID_ARGUMENT, "row 0, feature 3 ('mean area') is nan"),
        ("shape vs data", shape_mismatch, grpc.StatusCode.INVALID_ARGUMENT, "needs 90 values"),
        ("wrong datatype", wrong_type, grpc.StatusCode.INVALID_ARGUMENT, "datatype 'BYTES'"),
        (
            "empty batch",
            request(serving_data.x[:0]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "the batch is empty",
        ),
        (
            "batch above maximum",
            request(serving_data.x[:65]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "maximum of 64",
        ),
        (
            "unknown model",
            request(serving_data.x[:1], model_name="iris"),
            grpc.StatusCode.NOT_FOUND,
            "not served here",
        ),
        (
            "message above limit",
            request(serving_data.x[:600]),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "",
        ),
    ]


def test_grpc_errors_are_status_codes_with_messages_and_are_counted(
    serving_model_factory: Callable[..., Any], serving_data: Data
) -> None:
    model = serving_model_factory("logreg")
    cases = invalid_calls(serving_data)
    labels = {"model_name": MODEL_NAME, "model_version": "3", "protocol": "grpc"}

    def count(outcome: str) -> float:
        return (
            REGISTRY.get_sample_value("inference_requests_total", {**labels, "outcome": outcome})
            or 0.0
        )

    before = count("invalid"), count("ok")

    async def call(address: str) -> list[tuple[grpc.StatusCode, str]]:
        answers = []
        async with grpc.aio.insecure_channel(address) as channel:
            stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            for _, request, _, _ in cases:
                try:
                    await stub.ModelInfer(request)
                    answers.append((grpc.StatusCode.OK, ""))
                except grpc.aio.AioRpcError as e:
                    answers.append((e.code(), e.details() or ""))
            await stub.ModelInfer(features_request(serving_data.x[:1]).to_grpc())  # still serving
        return answers

    answers = serve(model, call)

    for (name, _, code, message), (got_code, details) in zip(cases, answers, strict=True):
        assert got_code == code, name
        assert message in details, name
    # The transport refuses an oversized message before the servicer sees it.
    assert (count("invalid") - before[0], count("ok") - before[1]) == (len(cases) - 1, 1.0)


def test_grpc_before_the_model_loads_is_not_ready(
    serving_model_factory: Callable[..., Any], serving_data: Data
) -> None:
    model = serving_model_factory("logreg", load=False)
    model.waiting_for = "models:/breast-cancer/3: the registry at http://mlflow:5000 failed"

    async def call(address: str) -> tuple[bool, bool, grpc.StatusCode, str]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            live = await stub.ServerLive(pb.ServerLiveRequest())
            ready = await stub.ServerReady(pb.ServerReadyRequest())
            try:
                await stub.ModelInfer(features_request(serving_data.x[:1]).to_grpc())
            except grpc.aio.AioRpcError as e:
                return live.live, ready.ready, e.code(), e.details() or ""
        raise AssertionError("inference before the load succeeded")

    live, ready, code, details = serve(model, call)

    assert (live, ready, code) == (True, False, grpc.StatusCode.UNAVAILABLE)
    assert "is not ready: waiting for models:/breast-cancer/3" in details
