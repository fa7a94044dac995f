"""The predictor's payload logger against real loopback HTTP servers: the events it
posts parse as KServe's do, and a slow sink makes it drop, never wait."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
from prometheus_client import CollectorRegistry

from predictionlog import events as sink_events
from serving.metrics import PredictorMetrics
from serving.payload_logger import Exchange, PayloadLogger
from tests.support import serving_http, wait_until


def exchange(n: int) -> Exchange:
    now = time.time()
    return Exchange(f"ex-{n}", b'{"inputs": []}', b'{"model_version": "3"}', now, now + 0.01)


def counts(metrics: PredictorMetrics) -> dict[str, float]:
    return {
        outcome: metrics.payload_log_events.labels(outcome)._value.get()
        for outcome in ("sent", "dropped", "failed")
    }


@pytest.mark.parametrize("batch_size", [1, 64])
def test_the_events_posted_are_payload_logger_events_the_sink_reads(batch_size: int) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((dict(self.headers.items()), body))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    metrics = PredictorMetrics(CollectorRegistry())
    with serving_http(Sink) as url:
        logger = PayloadLogger(
            url + "/", "all", "breast-cancer", metrics.payload_log_events, batch_size=batch_size
        )
        logger.log(exchange(1))
        wait_until(lambda: metrics.payload_log_events.labels("sent")._value.get() == 2, 10, "2")
        logger.close()

    parsed = []
    for headers, body in received:
        if sink_events.is_batch(headers.get("content-type")):
            parsed += sink_events.parse_batch(body)
        else:
            parsed.append(sink_events.parse(headers, body))
    assert len(received) == (2 if batch_size == 1 else 1)  # binary mode: one event a POST
    assert [(e.id, e.is_request) for e in parsed] == [("ex-1", True), ("ex-1", False)]
    assert parsed[1].model_version == "3"
    assert parsed[1].time > parsed[0].time
    assert parsed[0].inference_service == "breast-cancer"
    assert counts(metrics) == {"sent": 2, "dropped": 0, "failed": 0}


def test_a_slow_sink_makes_the_logger_drop_and_count_never_block() -> None:
    release, first_arrived = threading.Event(), threading.Event()

    class SlowSink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            first_arrived.set()
            release.wait(10)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    metrics = PredictorMetrics(CollectorRegistry())
    with serving_http(SlowSink) as url:
        logger = PayloadLogger(url + "/", "request", "m", metrics.payload_log_events, queue_size=2)
        logger.log(exchange(0))
        assert first_arrived.wait(10)  # the sender thread is stuck in its first post
        started = time.perf_counter()
        for n in range(1, 6):
            logger.log(exchange(n))  # two fit in the queue, three are dropped
        took = time.perf_counter() - started
        release.set()
        wait_until(lambda: counts(metrics)["sent"] == 3, 10, "the queued events sent")
        logger.close()

    assert counts(metrics) == {"sent": 3, "dropped": 3, "failed": 0}
    assert took < 5  # the sink holds its answer 10 s: no call waited for it
