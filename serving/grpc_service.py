"""The V2 gRPC side: KServe's servicer with inference and metadata done like REST.

`ModelInfer` converts with `serving.codec` (protobuf straight to the matrix: no
InferRequest, no pandas) and answers with `model_version` set; `ModelMetadata` lists
`versions`. Errors map through `serving.errors.describe`, one log line each, like REST.
"""

from __future__ import annotations

import logging
from concurrent import futures
from time import perf_counter
from typing import Any, NoReturn

import grpc
from grpc import aio
from grpc_interceptor import AsyncExceptionToStatusInterceptor
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer

from contract.metric_names import GRPC, OK
from serving import codec
from serving.errors import RepositoryNotServed, describe, log_failure
from serving.metadata import PLATFORM
from serving.model import RegistryModel
from serving.settings import grpc_address

logger = logging.getLogger(__name__)


class PredictorServicer(InferenceServicer):  # type: ignore[misc]
    def __init__(
        self, dataplane: Any, model_repository_extension: Any, model: RegistryModel
    ) -> None:
        super().__init__(dataplane, model_repository_extension)
        self.model = model

    async def ModelInfer(  # noqa: N802 - the protocol's method name
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        started = perf_counter()
        model = self.model
        try:
            active = model.target(request.model_name, request.model_version)
            decoded = codec.decode_grpc(request, active.model.spec, model.max_batch_size)
            prediction = model.infer(active, decoded.features)
            response = codec.encode_grpc(prediction, decoded, model.name, active.model.version)
        except Exception as exc:
            model.metrics.request(GRPC, describe(exc).outcome, perf_counter() - started)
            raise  # the interceptor turns it into a status
        model.metrics.request(GRPC, OK, perf_counter() - started)
        return response

    async def RepositoryModelLoad(  # noqa: N802
        self, request: pb.RepositoryModelLoadRequest, context: grpc.ServicerContext
    ) -> NoReturn:
        await self._no_repository(context)

    async def RepositoryModelUnload(  # noqa: N802
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.ServicerContext
    ) -> NoReturn:
        await self._no_repository(context)

    @staticmethod
    async def _no_repository(context: grpc.ServicerContext) -> NoReturn:
        """Deviation from KServe, whose servicer loads and unloads for anyone who asks."""
        raise RepositoryNotServed()  # the interceptor answers UNIMPLEMENTED

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        loaded = self.model.target(request.name, request.version).model
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
        log_failure(f"gRPC {method_name}", info, ex)
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
        host: str | None = None,
        max_pending_calls: int = 10_000,
    ) -> None:
        super().__init__(
            port, dataplane, model_repository_extension, kwargs={}, grace_period=grace_period
        )
        self.model = model
        self.max_receive_bytes = max_receive_bytes
        self.host = host
        self.max_pending_calls = max_pending_calls

    async def start(self, max_workers: int) -> None:
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(ErrorToStatus(),),
            options=[
                ("grpc.max_receive_message_length", self.max_receive_bytes),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                # Calls that arrived but that the asyncio server has not picked up yet
                # wait in gRPC core's queue, which by default refuses some past 1,000 and
                # all past 3,000 (early random detection); the asyncio server reports
                # each refused call as CANCELLED. The predictor takes calls one at a time
                # on its event loop, so a burst of 2,000 on one connection queued past
                # 1,000 and lost some. A queued call holds little more than its headers
                # (HTTP/2 flow control keeps its body in the transport's bounded window).
                ("grpc.server.max_pending_requests", self.max_pending_calls),
                ("grpc.server.max_pending_requests_hard_limit", self.max_pending_calls + 1),
            ],
        )
        servicer = PredictorServicer(self._data_plane, self._model_repository_extension, self.model)
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        # Deviation from KServe, which always binds [::]: `--host` applies.
        address = grpc_address(self.host, self._port)
        self._server.add_insecure_port(address)
        logger.info("gRPC (V2) listening on %s", address)
        await self._server.start()
        await self._server.wait_for_termination()
