"""uvicorn's httptools protocol with the limits uvicorn lacks: the size and the time of a
request head, the number of connections, and JSON answers from the parser level.

- Head size: a head (request line and headers) above `max_head_bytes` is answered 431
  and the connection closed. httptools buffers a header's value until it ends, so the
  bytes of an unfinished head are counted as they arrive: a huge header is refused
  after at most one socket read past the limit, never buffered whole.
- Head time: a connection must complete each request head within `head_timeout`,
  counted from the connection's start for its first request and from the first byte
  of a later one (between requests HTTP_IDLE_TIMEOUT, uvicorn's keep-alive timer,
  applies). Else it is closed. One timer per connection, not per request: when it
  fires while no head is pending it is dropped, and the next head arms a new one.
- Connections: past `max_connections` open ones a new connection is answered 503 and
  closed at once. (uvicorn's `limit_concurrency` counts connections too, but looks
  only when a request head is complete: idle connections that send nothing are never
  refused, and each holds a descriptor.)
- Parser errors (a malformed request line, bad chunking) answer the API's JSON error
  shape rather than uvicorn's plain text.

httptools is a dependency, so this is the only HTTP protocol the server uses (h11,
uvicorn's fallback, is never loaded).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, ClassVar

import attrs
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger("vesper.http")

_REFUSAL_LOG_INTERVAL = 1.0  # seconds: a flood of refused connections logs once a second


@attrs.frozen(kw_only=True)
class ConnectionLimits:
    max_head_bytes: int = 16 * 1024
    head_timeout: float | None = 5.0  # seconds; None: no limit
    max_connections: int = 1024


class _HeadRefused(Exception):
    """Raised in a parser callback to stop parsing; the refusal is already recorded."""


def error_bytes(status: int, error: str, detail: dict[str, Any] | None = None) -> bytes:
    """A complete `Connection: close` response carrying the API's error shape."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with `limits` (set on a subclass: see `protocol_class`)."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    # refusals since the last log line, and when that line was written (per server class)
    _refused: ClassVar[int] = 0
    _refused_logged_at: ClassVar[float] = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # a new connection waits for its first head
        self._head_since = 0.0
        self._head_bytes = 0
        self._heads_begun = 0
        self._read_bytes = 0  # of the read being parsed
        self._refusal: bytes | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse_connection()
            return
        self._head_since = self.loop.time()
        self._arm_head_timer(self.limits.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Only a read that continues a head already begun is all head: a read in which
        # a head begins may also hold the end of the previous request.
        heads_begun, in_head = self._heads_begun, self._in_head
        self._read_bytes = len(data)
        super().data_received(data)
        if in_head and self._in_head and self._heads_begun == heads_begun and self._refusal is None:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._heads_begun += 1
        self._head_bytes = 0
        if not self._in_head:  # a later request on a kept-alive connection
            self._in_head = True
            self._head_since = self.loop.time()
            if self._head_timer is None:
                self._arm_head_timer(self.limits.head_timeout)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_bytes + self._read_bytes > self.limits.max_head_bytes and (
            # the exact size, when the reads of this head may hold more than the limit
            len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            > self.limits.max_head_bytes
        ):
            self._refuse_head()
            raise _HeadRefused  # uvicorn answers a parser error with send_400_response
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request the parser rejects, in the API's error shape."""
        if self._refusal is None:
            self._refusal = error_bytes(400, f"malformed HTTP request: {msg}")
        self._send_and_close(self._refusal)

    def _refuse_head(self) -> None:
        limit = self.limits.max_head_bytes
        self._refusal = error_bytes(
            431,
            f"the request head (request line and headers) is larger than {limit} bytes",
            {"max_bytes": limit},
        )
        self._send_and_close(self._refusal)

    def _refuse_connection(self) -> None:
        cls = type(self)
        cls._refused += 1
        now = time.monotonic()
        if now - cls._refused_logged_at >= _REFUSAL_LOG_INTERVAL:
            log.warning(
                "refused %d connection(s): %d are open, the limit is %d (VESPER_MAX_CONNECTIONS)",
                cls._refused,
                len(self.connections) - 1,
                self.limits.max_connections,
            )
            cls._refused, cls._refused_logged_at = 0, now
        self._send_and_close(
            error_bytes(
                503,
                "too many open connections; retry later",
                {"max_connections": self.limits.max_connections},
            )
        )

    def _send_and_close(self, response: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    def _arm_head_timer(self, seconds: float | None) -> None:
        if seconds is not None:
            self._head_timer = self.loop.call_later(seconds, self._head_timer_fired)

    def _head_timer_fired(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return  # no head pending: the next one arms the timer again
        assert self.limits.head_timeout is not None
        remaining = self._head_since + self.limits.head_timeout - self.loop.time()
        if remaining > 0:  # a later head than the one this timer was armed for
            self._arm_head_timer(remaining)
        else:
            self.transport.close()


def protocol_class(limits: ConnectionLimits) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for uvicorn.Config(http=...) bound to `limits`."""
    return type(
        "VesperHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {"limits": limits, "_refused": 0, "_refused_logged_at": 0.0},
    )
