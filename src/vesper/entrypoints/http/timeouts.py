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

import math
from datetime import timedelta

import anyio
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_408_REQUEST_TIMEOUT
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from vesper.domain.errors import StoreUnavailable


class BodyTimeout(HTTPException):
    status_code = HTTP_408_REQUEST_TIMEOUT


def _seconds(value: timedelta | None) -> float | None:
    if value is None or value <= timedelta(0):
        return None
    return value.total_seconds()


class TimeoutMiddleware:
    """Bound the time to read a request body and to start the response."""

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
        start = anyio.current_time()
        body_complete = False
        response_started = False

        async def receive_in_time() -> ReceiveMessage:
            nonlocal body_complete
            if body_complete or self.read_timeout is None:
                return await receive()
            remaining = max(start + self.read_timeout - anyio.current_time(), 0.0)
            try:
                with anyio.fail_after(remaining):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(
                    detail="the request body did not arrive within HTTP_READ_TIMEOUT",
                    extra={"read_timeout_seconds": self.read_timeout},
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        deadline = start + self.write_timeout if self.write_timeout is not None else math.inf
        with anyio.CancelScope(deadline=deadline) as cancel_scope:

            async def send_tracked(message: Message) -> None:
                nonlocal response_started
                if message["type"] == "http.response.start":
                    response_started = True
                    cancel_scope.deadline = math.inf  # never cut a response halfway
                await send(message)

            await self.app(scope, receive_in_time, send_tracked)
        if cancel_scope.cancelled_caught and not response_started:
            raise StoreUnavailable("no response within HTTP_WRITE_TIMEOUT")
