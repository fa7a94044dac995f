"""`kserve.ModelServer`, started before its model is ready.

KServe's own `start()` refuses to run without a ready model and calls `load()` before
listening. Here the servers listen first (so `/v2/health/live` answers at once), the
model loads in a background thread that retries until the registry answers, and the
server turns ready by itself when it does.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from kserve import ModelServer
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane

from contract import upstream
from serving.grpc_service import PredictorGRPCServer
from serving.metrics import default_metrics
from serving.model import RegistryModel
from serving.payload_logger import PayloadLogger
from serving.rest import PredictorRESTServer
from serving.settings import Settings

logger = logging.getLogger(__name__)


class ReadyDataPlane(DataPlane):  # type: ignore[misc]
    """KServe's data plane, except that the server is ready only once every model is
    (KServe's answers ready as soon as it listens), and `GET /v2` advertises no model
    repository extension (KServe's always does; the predictor does not mount it)."""

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "extensions": []}

    async def ready(self) -> bool:
        models = self.model_registry.get_models()
        return bool(models) and all([await m.healthy() for m in models.values()])


class PredictorServer(ModelServer):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        super().__init__(
            http_port=settings.http_port,
            grpc_port=settings.grpc_port,
            workers=1,
            max_threads=settings.grpc_max_threads,
            registered_models=ModelRepository(),
            enable_grpc=settings.enable_grpc,
            enable_docs_url=False,
            enable_latency_logging=False,
            timeout_keep_alive=settings.timeout_keep_alive,
            grace_period=settings.grace_period,
        )
        self.settings = settings
        self._payload_log: PayloadLogger | None = None
        self.dataplane = ReadyDataPlane(model_registry=self.registered_models)

    def rest_server(self, model: RegistryModel) -> PredictorRESTServer:
        return PredictorRESTServer(
            model,
            self.dataplane,
            self.model_repository_extension,
            self.settings.http_port,
            host=self.settings.host,
            max_header_bytes=self.settings.max_header_bytes,
            max_header_count=self.settings.max_header_count,
            drain_seconds=self.settings.drain_seconds,
            max_body_bytes=self.settings.max_body_bytes,
            access_log=self.settings.access_log,
            grace_period=self.grace_period,
            timeout_keep_alive=self.settings.timeout_keep_alive,
            event_loop=self.settings.event_loop,
            payload_log=self.payload_log(),
        )

    def payload_log(self) -> PayloadLogger | None:
        """The predictor's own payload logger, when `LOGGER_URL` is set (stopped with it)."""
        s = self.settings
        if s.logger_url is None:
            return None
        if self._payload_log is None:
            self._payload_log = PayloadLogger(
                s.logger_url,
                s.logger_mode,
                s.model_name,
                default_metrics().payload_log_events,
                queue_size=s.logger_queue_size,
                batch_size=s.logger_batch_size,
            )
            logger.info("posting %s payloads to %s (LOGGER_URL)", s.logger_mode, s.logger_url)
        return self._payload_log

    def start(self, models: list[Any]) -> None:
        """Listen on HTTP (and gRPC), then load `models[0]` in the background."""
        if len(models) != 1 or not isinstance(models[0], RegistryModel):
            raise ValueError("the predictor serves exactly one RegistryModel")
        model: RegistryModel = models[0]
        self.register_model(model)
        model.enable_latency_logging = False
        self._rest_server = self.rest_server(model)
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = PredictorGRPCServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                model,
                max_receive_bytes=self.settings.grpc_receive_limit,
                host=self.settings.host,
                max_pending_calls=self.settings.grpc_max_pending_calls,
                grace_period=self.grace_period,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        # A daemon thread: a load waiting out a backoff must not hold up shutdown.
        threading.Thread(target=self._load, args=(model,), name="model-loader", daemon=True).start()
        self.register_signal_handler()
        # KServe's own start runs `asyncio.run`, so its `--event-loop` (default: uvloop
        # where installed) never applies, and `setup_event_loop()` configures a loop
        # that is then not the one running. Here the loop is the one the flag names.
        with asyncio.Runner(loop_factory=self._rest_server.config.get_loop_factory()) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        self.setup_event_loop()  # KServe's exception handler and executor, on this loop
        loop = type(asyncio.get_running_loop())
        logger.info("event loop: %s.%s", loop.__module__, loop.__qualname__)
        await super()._serve()

    @staticmethod
    def _load(model: RegistryModel) -> None:
        if model.load():
            upstream.freeze_long_lived_objects()  # the loaded model lives as long

    def stop(self, sig: int) -> None:
        for model in self.registered_models.get_models().values():
            model.stop()
        # KServe's stop() only reaches the multi-process REST server; uvicorn's own
        # signal handling stops ours.
        if self._rest_server is not None:
            self._rest_server._server.should_exit = True
        if self._payload_log is not None:
            self._payload_log.close()
        super().stop(sig)
