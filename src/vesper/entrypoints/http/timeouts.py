"""HTTP_READ_TIMEOUT and HTTP_WRITE_TIMEOUT, enforced inside the app.

uvicorn has no read or write timeout, so this middleware gives the Go service's
meaning to both, measured from the moment the request's headers were read:

- read: the whole body must arrive within HTTP_READ_TIMEOUT, else 408;
- write: the response must start within HTTP_WRITE_TIMEOUT, else 503 with
  Retry-After (a store that hangs does not hang the client). A response that has
  started is never cut.

A blocking store call that outlives the write timeout is abandoned, not killed: its
thread ends when the driver's own timeout fires. A zero or unset value disables a
timeout (as in Go).
"""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta

from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_408_REQUEST_TIMEOUT
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from vesper.domain.errors import StoreUnavailable
from vesper.entrypoints.http.waiting import requested_wait


class BodyTimeout(HTTPException):
    status_code = HTTP_408_REQUEST_TIMEOUT


def _seconds(value: timedelta | None) -> float | None:
    if value is None or value <= timedelta(0):
        return None
    return value.total_seconds()


class TimeoutMiddleware:
    """Bound the time to read a request body and to start the response.

    One asyncio timeout per request covers both: its deadline is the nearer of the two
    until the body is complete, then the write deadline, then none once the response
    has started. (anyio cancel scopes, one per request and one per body read, cost 15 %
    of the CPU of a small POST.)
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        read_timeout: timedelta | None = None,
        write_timeout: timedelta | None = None,
    ) -> None:
        self.app = app
        self.read_timeout = _seconds(read_timeout)
        self.write_timeout = _seconds(write_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or (
            self.read_timeout is None and self.write_timeout is None
        ):
            await self.app(scope, receive, send)
            return
        start = asyncio.get_running_loop().time()
        read_by = start + self.read_timeout if self.read_timeout is not None else math.inf
        write_by = start + self.write_timeout if self.write_timeout is not None else math.inf
        if scope.get("method") == "GET":  # GET /jobs/{id}?wait=30s answers after its wait
            write_by += requested_wait(scope["query_string"])
        body_complete = False
        response_started = False
        timeout = asyncio.timeout_at(_when(min(read_by, write_by)))

        async def receive_tracked() -> ReceiveMessage:
            nonlocal body_complete
            message = await receive()
            if not body_complete and (
                message["type"] != "http.request" or not message.get("more_body", False)
            ):
                body_complete = True
                if not response_started:
                    timeout.reschedule(_when(write_by))
            return message

        async def send_tracked(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                timeout.reschedule(None)  # never cut a response halfway
            await send(message)

        try:
            async with timeout:
                await self.app(scope, receive_tracked, send_tracked)
        except TimeoutError:
            if not timeout.expired() or response_started:
                raise  # not ours, or too late to answer anything else
        if timeout.expired() and not response_started:
            if not body_complete and read_by <= write_by:
                raise BodyTimeout(
                    detail="the request body did not arrive within HTTP_READ_TIMEOUT",
                    extra={"read_timeout_seconds": self.read_timeout},
                ) from None
            raise StoreUnavailable("no response within HTTP_WRITE_TIMEOUT") from None


def _when(deadline: float) -> float | None:
    return None if deadline == math.inf else deadline
