"""A small HTTP proxy in front of a real `mlflow server` that fails chosen calls: what
the registration tests put between the training Job and MLflow (127.0.0.1 only).

It records every call as `METHOD /path` with the ids of runs, logged models and
experiments replaced (so a call names the same kind of request in every run), answers 503
for the calls a rule selects, and can die right after forwarding one: from then on it
closes every connection without an answer, as a server that went away would.
"""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from tests.support import serving_http

_IDS = (
    (re.compile(r"m-[0-9a-f]{32}"), "MODEL"),
    (re.compile(r"/[0-9a-f]{32}(?=/)"), "/RUN"),
    (re.compile(r"/artifacts/[0-9]+/"), "/artifacts/EXPERIMENT/"),
)


def kind(method: str, path: str) -> str:
    """`METHOD /path` with ids replaced: `PUT .../artifacts/EXPERIMENT/RUN/artifacts/x.png`."""
    for pattern, name in _IDS:
        path = pattern.sub(name, path)
    return f"{method} {path}"


HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Faults:
    """What the proxy does to calls of one `kind`."""

    fail: str | None = None
    """Answer 503 to every such call."""
    die_after: str | None = None
    """Forward the first such call, then stop answering anything."""
    calls: list[str] = field(default_factory=list)
    dead: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(upstream: str, faults: Faults) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(upstream)

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            call = kind(self.command, urlsplit(self.path).path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with faults.lock:
                faults.calls.append(call)
                dead = faults.dead
            if dead:
                self.close_connection = True
                return  # no answer at all: the client sees the connection drop
            if call == faults.fail:
                self.send_response(503)
                self.send_header("Content-Type", "application/json")
                payload = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected"}'
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
            finally:
                connection.close()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            if call == faults.die_after:
                with faults.lock:
                    faults.dead = True

        # http.server's method names.
        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Proxy


@contextmanager
def fault_proxy(upstream: str, faults: Faults) -> Iterator[str]:
    """The proxy's URL while the block runs."""
    with serving_http(_handler(upstream, faults)) as url:
        yield url
