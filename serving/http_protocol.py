"""uvicorn's httptools protocol with a bounded request head and a draining shutdown.

Two deviations from uvicorn 0.54 (`uvicorn/protocols/http/httptools_impl.py`), both here:

- The request head is limited. uvicorn's httptools protocol takes a head of any size and
  any number of header lines (its h11 protocol limits only the size, and answers 400),
  and httptools buffers a header value that has not ended yet by concatenating the pieces:
  8 connections each sending 32 MB of one unfinished header raised the predictor's RSS by
  about 240 MB in 4 s. Here the bytes and lines of the head are counted as they arrive,
  before the parser sees them, and a head past either limit is answered with a 431 and
  the connection closed.
- Shutdown drains. uvicorn closes every idle keep-alive connection the moment it shuts
  down: a client whose next request is already on its way gets a reset. Here an idle
  connection stays open for `drain_seconds` after the shutdown begins, for one more
  request, which is answered with `Connection: close`; a connection busy with a request
  gets its response with `Connection: close` (as uvicorn does). The server has stopped
  accepting by then (uvicorn's own shutdown closes the listening socket first).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

HEAD_END = b"\r\n\r\n"


class LimitedHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc]
    """Class attributes are set by `protocol_class` (uvicorn builds one instance per
    connection from `Config.http`, with no room for arguments of our own)."""

    max_head_bytes: int = 32 * 1024
    max_header_count: int = 100
    drain_seconds: float = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # a connection begins with a request head
        self._head_bytes = 0
        self._head_lines = 0
        self._tail = b""  # the head's last bytes so far: its end may straddle two reads
        self._draining = False
        self._drain_timer: asyncio.TimerHandle | None = None

    # --- the request head ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.parser is None:  # refused: the connection is closing
            return
        if self._in_head and not self._count_head(data):
            return
        # The rest is uvicorn's own `data_received`.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def _count_head(self, data: bytes) -> bool:
        """Count the part of `data` that belongs to the head; False once it is refused.

        What follows a head in the same read (the body) is not counted. Bytes of the next
        request's head that come in the read which ends a body are not counted either: at
        most one read (64 KiB) more than the limit gets through to the parser.
        """
        seam = (self._tail + data[:3]).find(HEAD_END)
        if seam >= 0:
            end = seam + 4 - len(self._tail)
        else:
            found = data.find(HEAD_END)
            end = found + 4 if found >= 0 else -1
        head = data if end < 0 else data[:end]
        self._head_bytes += len(head)
        self._head_lines += head.count(b"\n")
        # The request line and the blank line that ends the head are not header lines.
        if self._head_bytes > self.max_head_bytes:
            self._refuse(f"the request head exceeds {self.max_head_bytes} bytes")
            return False
        if self._head_lines - 2 > self.max_header_count:
            self._refuse(f"the request has more than {self.max_header_count} header fields")
            return False
        if end < 0:
            self._tail = (self._tail + head)[-3:]
        else:
            self._in_head = False
        return True

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes, self._head_lines, self._tail = True, 0, 0, b""

    def _refuse(self, problem: str) -> None:
        logger.warning("request refused (431): %s", problem)
        body = orjson.dumps(
            {
                "error": f"{problem} (MAX_HEADER_BYTES={self.max_head_bytes}, "
                f"MAX_HEADER_COUNT={self.max_header_count}); send fewer or shorter headers"
            }
        )
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
        self._in_head = False
        self.parser = None  # type: ignore[assignment]  # nothing more is parsed

    # --- draining --------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Called by uvicorn's server as it shuts down (it has stopped accepting)."""
        self._draining = True
        if self.cycle is None or self.cycle.response_complete:
            self._drain_timer = self.loop.call_later(self.drain_seconds, self._close_idle)
        else:
            self.cycle.keep_alive = False

    def _close_idle(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()
        # Otherwise a last request came meanwhile: it closes after its response.

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # its response says Connection: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        super().connection_lost(exc)


def protocol_class(
    max_head_bytes: int, max_header_count: int, drain_seconds: float
) -> type[LimitedHttpToolsProtocol]:
    """The protocol for uvicorn's `Config.http`, with these limits."""
    return type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {
            "max_head_bytes": max_head_bytes,
            "max_header_count": max_header_count,
            "drain_seconds": drain_seconds,
        },
    )
