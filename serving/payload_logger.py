"""The predictor's own payload logger (`LOGGER_URL`), for where KServe's agent is absent.

In the cluster, KServe's agent sidecar (`spec.predictor.logger`) posts every request and
response to the prediction log; run as plain processes (`make demo`, a laptop) there is
no agent, so the predictor posts the same CloudEvents itself: types
`org.kubeflow.serving.inference.request` / `.response`, one `ce-id` per exchange (the
request's `Ce-Id` header, as KServe's agent takes it, else a new UUID), the
`inferenceservicename`, `component` and `endpoint` extensions (no `namespace`), and
`LOGGER_MODE` (`all`, `request`, `response`) as KServe's `logger.mode` (kserve/kserve
`pkg/logger/handler.go`, `worker.go`).

It must never slow a request down nor fail one: the request path only puts the bodies
on a bounded queue (a few hundred nanoseconds); one thread builds the events with the
`cloudevents` SDK and posts what is queued, up to `LOGGER_BATCH_SIZE` exchanges in one
POST in the HTTP binding's batched mode (`application/cloudevents-batch+json`, which the
prediction log reads): one event per POST, as the agent sends them, could not keep up
with the predictor (measured: 9 of 10 exchanges dropped at 550 requests/s).
`LOGGER_BATCH_SIZE=1` sends single binary-mode events, for receivers without batches.
When the sink is slow or down the queue fills up and further exchanges are dropped,
counted in `inference_payload_log_events_total` (`outcome="dropped"`; `failed` for a post
the sink did not take). Unlike the agent, the
predictor logs only the exchanges it answered with 200 in JSON (the binary tensor
extension's bodies are not logged).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import urllib3
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from prometheus_client import Counter

from serving.settings import LOGGER_MODES

logger = logging.getLogger(__name__)

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
SENT, DROPPED, FAILED = "sent", "dropped", "failed"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
WARN_EVERY_SECONDS = 30.0
"""A sink that is down fails every post: one warning per this many seconds, not per post."""


@dataclass(frozen=True)
class Exchange:
    """What one answered request leaves on the queue."""

    id: str
    request: bytes
    response: bytes
    request_time: float
    response_time: float

    @property
    def size(self) -> int:
        return len(self.request) + len(self.response)


def request_id(headers: Mapping[str, str]) -> str:
    """The exchange's id: the client's `Ce-Id`, as KServe's agent takes it, else a UUID."""
    return headers.get("ce-id") or str(uuid.uuid4())


class PayloadLogger:
    def __init__(
        self,
        url: str,
        mode: str,
        model_name: str,
        events: Counter,
        queue_size: int = 1000,
        batch_size: int = 64,
        linger_seconds: float = 0.1,
        max_queued_bytes: int = 64 * 1024 * 1024,
        timeout_seconds: float = 2.0,
        source: str = "predictor",
    ) -> None:
        if mode not in LOGGER_MODES:
            raise ValueError(f"mode {mode!r}: choose from {', '.join(LOGGER_MODES)}")
        self.url = url
        self.mode = mode
        self.batch_size = batch_size
        self.linger_seconds = linger_seconds if batch_size > 1 else 0.0
        self.model_name = model_name
        self.source = source
        self._sent = events.labels(SENT)
        self._dropped = events.labels(DROPPED)
        self._failed = events.labels(FAILED)
        self._queue: queue.Queue[Exchange | None] = queue.Queue(queue_size)
        # Bodies may be up to MAX_BODY_BYTES each: the queue is bounded in bytes too.
        self._max_queued_bytes = max_queued_bytes
        self._queued_bytes = 0
        self._bytes_lock = threading.Lock()
        self._http = urllib3.PoolManager(
            maxsize=1,
            retries=False,
            timeout=urllib3.Timeout(connect=timeout_seconds, read=timeout_seconds),
        )
        self._last_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="payload-logger", daemon=True)
        self._thread.start()

    # --- the request path: never blocks -----------------------------------------------------

    def log(self, exchange: Exchange) -> None:
        size = exchange.size
        with self._bytes_lock:
            room = self._queued_bytes + size <= self._max_queued_bytes
            if room:
                self._queued_bytes += size
        if room:
            try:
                self._queue.put_nowait(exchange)
                return
            except queue.Full:
                self._release(size)
        self._dropped.inc(2 if self.mode == "all" else 1)

    def _release(self, size: int) -> None:
        with self._bytes_lock:
            self._queued_bytes -= size

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (for at most `timeout`), then stop the thread."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    # --- the sender thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch, last = self._next_batch()
            if batch:
                events = [event for exchange in batch for event in self.events_of(exchange)]
                if self.batch_size == 1:
                    for event in events:
                        self._post_binary(event)
                else:
                    self._post_batch(events)
            if last:
                return

    def _next_batch(self) -> tuple[list[Exchange], bool]:
        """What is queued, up to `batch_size` exchanges (waiting for the first); and
        whether `close()` asked the thread to stop after them."""
        first = self._queue.get()
        if first is None:
            return [], True
        if self.linger_seconds:
            # Let a batch gather: posting each exchange as it comes cost the predictor a
            # POST per request (its throughput fell to 57 %); the events wait 0.1 s more.
            time.sleep(self.linger_seconds)
        batch = [first]
        while len(batch) < self.batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._release_all(batch)
                return batch, True
            batch.append(item)
        self._release_all(batch)
        return batch, False

    def _release_all(self, batch: list[Exchange]) -> None:
        self._release(sum(exchange.size for exchange in batch))

    def events_of(self, exchange: Exchange) -> list[CloudEvent]:
        halves = []
        if self.mode in ("all", "request"):
            halves.append((REQUEST_TYPE, exchange.request, exchange.request_time))
        if self.mode in ("all", "response"):
            halves.append((RESPONSE_TYPE, exchange.response, exchange.response_time))
        return [
            CloudEvent(
                {
                    "id": exchange.id,
                    "type": kind,
                    "source": self.source,
                    "time": datetime.fromtimestamp(at, UTC).isoformat(),
                    "datacontenttype": "application/json",
                    "inferenceservicename": self.model_name,
                    "component": "predictor",
                    "endpoint": "default",
                },
                body,
            )
            for kind, body, at in halves
        ]

    def _post_binary(self, event: CloudEvent) -> None:
        """One event per POST, in binary mode: exactly what KServe's agent sends."""
        headers, body = to_binary(event, data_marshaller=_as_bytes)
        self._post(headers, body, 1)

    def _post_batch(self, events: list[CloudEvent]) -> None:
        """The events of up to `batch_size` exchanges in one POST, in the HTTP binding's
        batched mode: a JSON array of structured events, each body embedded as JSON."""
        body = orjson.dumps(
            [
                {**event.get_attributes(), "data": orjson.Fragment(_as_bytes(event.get_data()))}
                for event in events
            ]
        )
        self._post({"content-type": BATCH_CONTENT_TYPE}, body, len(events))

    def _post(self, headers: dict[str, str], body: bytes, count: int) -> None:
        try:
            answer = self._http.request("POST", self.url, body=body, headers=headers)
        except urllib3.exceptions.HTTPError as e:
            self._failure(f"{type(e).__name__}: {e}", count)
            return
        if answer.status >= 300:
            self._failure(f"HTTP {answer.status}: {answer.data[:200]!r}", count)
        else:
            self._sent.inc(count)

    def _failure(self, why: str, count: int) -> None:
        self._failed.inc(count)
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            logger.warning("payload log: the sink at %s did not take an event (%s)", self.url, why)


def _as_bytes(data: object) -> bytes:
    return data if isinstance(data, bytes) else str(data).encode()
