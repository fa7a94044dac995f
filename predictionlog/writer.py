"""Group commit: every event waiting when the writer is free goes in one transaction.

A POST is answered only once its event is committed (a 2xx means stored), yet the
database sees one transaction per batch, not per event: under load the batches grow by
themselves, and a lone event waits for no timer. Two writers take turns, so one batch
is gathered and sent while the other waits for its commit (the fsync). A batch the
database refuses for its data is split, so one bad event fails alone and the others are
stored.
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
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, writers: int = 2) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"batch-writer-{n}") for n in range(writers)
        ]

    async def stop(self) -> None:
        """Let queued events be written, then stop."""
        if not self._tasks:
            return
        await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def submit(self, events: list[LogEvent]) -> None:
        """Return once every one of `events` is committed; `StoreUnavailable` (or
        `InvalidEvent`) if one could not be."""
        if self._queue.maxsize - self._queue.qsize() < len(events):
            raise Busy(
                f"{self._queue.qsize()} events are already waiting for the database; retry later"
            )
        loop = asyncio.get_running_loop()
        pending = [loop.create_future() for _ in events]
        for event, done in zip(events, pending, strict=True):
            self._queue.put_nowait((event, done))
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            raise failed[0]

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
