"""The V2 gRPC side: KServe's servicer with inference and metadata done like REST.

`ModelInfer` decodes the protobuf tensors straight into the codec (no InferRequest, no
pandas) and answers with `model_version` set; `ModelMetadata` lists `versions`. Errors
map through `serving.errors.describe`, one log line each, like REST.
"""

from __future__ import annotations

import logging
from concurrent import futures
from time import perf_counter
from typing import Any, NoReturn

import grpc
import numpy as np
from grpc import aio
from grpc_interceptor import AsyncExceptionToStatusInterceptor
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer

from serving import codec
from serving.errors import OK, InvalidRequest, UnknownModel, describe
from serving.metadata import PLATFORM, ModelSpec
from serving.metrics import GRPC
from serving.model import RegistryModel

logger = logging.getLogger(__name__)

# Where each V2 datatype's values sit in InferTensorContents.
_CONTENTS_FIELD = {
    "FP64": "fp64_contents",
    "FP32": "fp32_contents",
    "INT64": "int64_contents",
    "INT32": "int_contents",
    "INT16": "int_contents",
    "INT8": "int_contents",
    "UINT64": "uint64_contents",
    "UINT32": "uint_contents",
    "UINT16": "uint_contents",
    "UINT8": "uint_contents",
}


def decode_grpc(
    request: pb.ModelInferRequest, spec: ModelSpec, max_batch: int
) -> codec.DecodedRequest:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(
            f"{len(request.inputs)} inputs but {len(raw)} raw_input_contents: "
            "send one raw buffer per input, or none"
        )
    tensors = []
    for index, tensor in enumerate(request.inputs):
        datatype = tensor.datatype
        if datatype not in codec.NUMERIC_DATATYPES:
            data: Any = []
        elif raw:
            itemsize = np.dtype(codec.NUMERIC_DATATYPES[datatype]).itemsize
            if len(raw[index]) % itemsize:
                raise InvalidRequest(
                    f"raw contents of input {tensor.name!r} hold {len(raw[index])} bytes, not a "
                    f"whole number of {datatype} values"
                )
            data = np.frombuffer(raw[index], dtype=codec.NUMERIC_DATATYPES[datatype])
        elif datatype == "FP16":
            raise InvalidRequest(f"input {tensor.name!r}: FP16 values must come as raw contents")
        else:
            data = np.asarray(getattr(tensor.contents, _CONTENTS_FIELD[datatype]))
        tensors.append(codec.Tensor(tensor.name, datatype, list(tensor.shape), data))
    if not tensors:
        raise InvalidRequest("the request has no inputs; send one 'features' tensor [N, F]")
    return codec.DecodedRequest(
        features=codec.assemble(tensors, spec, max_batch),
        outputs=codec.requested_outputs([o.name for o in request.outputs]),
        request_id=request.id or None,
    )


def encode_grpc(
    prediction: Any, decoded: codec.DecodedRequest, model_name: str, version: str
) -> pb.ModelInferResponse:
    rows = len(prediction.labels)
    outputs = []
    for name in decoded.outputs:
        if name == "label":
            outputs.append(
                pb.ModelInferResponse.InferOutputTensor(
                    name=name,
                    datatype="INT64",
                    shape=[rows],
                    contents=pb.InferTensorContents(int64_contents=prediction.labels.tolist()),
                )
            )
        elif name == "probabilities":
            probabilities = prediction.probabilities
            outputs.append(
                pb.ModelInferResponse.InferOutputTensor(
                    name=name,
                    datatype="FP64",
                    shape=list(probabilities.shape),
                    contents=pb.InferTensorContents(fp64_contents=probabilities.ravel().tolist()),
                )
            )
        else:
            outputs.append(
                pb.ModelInferResponse.InferOutputTensor(
                    name=name,
                    datatype="BYTES",
                    shape=[rows],
                    contents=pb.InferTensorContents(
                        bytes_contents=[n.encode() for n in prediction.class_names]
                    ),
                )
            )
    return pb.ModelInferResponse(
        model_name=model_name, model_version=version, id=decoded.request_id or "", outputs=outputs
    )


class PredictorServicer(InferenceServicer):  # type: ignore[misc]
    def __init__(
        self, dataplane: Any, model_repository_extension: Any, model: RegistryModel
    ) -> None:
        super().__init__(dataplane, model_repository_extension)
        self.model = model

    def _check_target(self, name: str, version: str) -> None:
        if name != self.model.name:
            raise UnknownModel(
                f"model {name!r} is not served here; this server serves '{self.model.name}'"
            )
        if version:
            loaded = self.model.active().model.version
            if version != loaded:
                raise UnknownModel(
                    f"version {version!r} of '{name}' is not loaded here; "
                    f"the loaded version is {loaded}"
                )

    async def ModelInfer(  # noqa: N802 - the protocol's method name
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        started = perf_counter()
        model = self.model
        metrics = model.metrics
        try:
            self._check_target(request.model_name, request.model_version)
            active = model.active()
            metrics = active.metrics
            decoded = decode_grpc(request, active.model.spec, model.max_batch_size)
            prediction = model.infer(active, decoded.features)
            response = encode_grpc(prediction, decoded, model.name, active.model.version)
        except Exception as exc:
            metrics.request(GRPC, describe(exc).outcome, perf_counter() - started)
            raise  # the interceptor turns it into a status
        metrics.request(GRPC, OK, perf_counter() - started)
        return response

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        self._check_target(request.name, request.version)
        loaded = self.model.active().model
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=self.model.name,
            versions=[loaded.version],
            platform=PLATFORM,
            inputs=[tensor(**t) for t in loaded.spec.inputs()],
            outputs=[tensor(**t) for t in loaded.spec.outputs()],
        )


class ErrorToStatus(AsyncExceptionToStatusInterceptor):  # type: ignore[misc]
    """Every exception → the gRPC status `describe` gives it, with its message."""

    async def handle_exception(
        self, ex: Exception, request_or_iterator: Any, context: Any, method_name: str
    ) -> NoReturn:
        info = describe(ex)
        if info.status >= 500 and info.status != 503:
            logger.error("gRPC %s failed: %s", method_name, ex, exc_info=ex)
        elif info.status != 503:
            logger.warning("gRPC %s rejected (%s): %s", method_name, info.grpc_code, info.message)
        await context.abort(grpc.StatusCode[info.grpc_code], info.message)
        raise AssertionError("context.abort() returned")  # it always raises


class PredictorGRPCServer(GRPCServer):  # type: ignore[misc]
    """KServe's gRPC server with our servicer and interceptor (KServe's logs one line
    per call and answers some of its own errors with INTERNAL)."""

    def __init__(
        self,
        port: int,
        dataplane: Any,
        model_repository_extension: Any,
        model: RegistryModel,
        max_receive_bytes: int,
        grace_period: int = 30,
    ) -> None:
        super().__init__(
            port, dataplane, model_repository_extension, kwargs={}, grace_period=grace_period
        )
        self.model = model
        self.max_receive_bytes = max_receive_bytes

    async def start(self, max_workers: int) -> None:
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(ErrorToStatus(),),
            options=[
                ("grpc.max_receive_message_length", self.max_receive_bytes),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ],
        )
        servicer = PredictorServicer(self._data_plane, self._model_repository_extension, self.model)
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        address = f"[::]:{self._port}"
        self._server.add_insecure_port(address)
        logger.info("gRPC (V2) listening on %s", address)
        await self._server.start()
        await self._server.wait_for_termination()
