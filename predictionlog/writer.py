"""Group commit: every event waiting when the writer is free goes in one transaction.

A POST is answered only once its event is committed (a 2xx means stored), yet the
database sees one transaction per batch, not per event: under load the batches grow by
themselves, and a lone event waits for no timer. A batch the database refuses for its
data is split, so one bad event fails alone and the others are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from time import perf_counter

from predictionlog.errors import Busy, InvalidEvent, PredictionLogError, StoreUnavailable
from predictionlog.events import LogEvent
from predictionlog.metrics import SinkMetrics
from predictionlog.store import Store, is_data_error

logger = logging.getLogger(__name__)

Pending = tuple[LogEvent, "asyncio.Future[None]"]


class BatchWriter:
    def __init__(
        self, store: Store, metrics: SinkMetrics, max_batch: int = 500, max_pending: int = 10_000
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.max_batch = max_batch
        self._queue: asyncio.Queue[Pending] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="batch-writer")

    async def stop(self) -> None:
        """Let queued events be written, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def submit(self, event: LogEvent) -> None:
        """Return once `event` is committed; `StoreUnavailable` if it could not be."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((event, done))
        except asyncio.QueueFull as e:
            raise Busy(
                f"{self._queue.maxsize} events are already waiting for the database; retry later"
            ) from e
        await done

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[Pending]) -> None:
        started = perf_counter()
        try:
            await self.store.write([event for event, _ in batch])
        except Exception as e:
            if is_data_error(e) and len(batch) > 1:
                # One event's data broke the batch: write each on its own.
                for item in batch:
                    await self._write([item])
                return
            failure: PredictionLogError
            if is_data_error(e):
                outcome = "invalid"
                failure = InvalidEvent(f"the database refused the event's data ({e})")
            else:
                outcome = "error"
                failure = StoreUnavailable(f"the database did not store the event ({e})")
                logger.warning("a batch of %d events was not stored: %s", len(batch), e)
            for event, done in batch:
                self.metrics.event(event.kind, outcome)
                if not done.done():
                    done.set_exception(failure)
            return
        self.metrics.batch(len(batch), perf_counter() - started)
        for event, done in batch:
            self.metrics.event(event.kind, "stored")
            if not done.done():
                done.set_result(None)
