"""Serving the app with uvicorn, inside a loop that may also run workers.

uvicorn supports only some of the Go service's HTTP_* timeouts:

- HTTP_IDLE_TIMEOUT -> `timeout_keep_alive`: an idle keep-alive connection is closed
  after it (whole seconds, at least 1; zero falls back to HTTP_READ_TIMEOUT, as in Go).
- HTTP_READ_HEADER_TIMEOUT: uvicorn has no such timer. A client that opens a connection
  and never finishes its headers holds it open; h11 caps the header size (16 KiB) but
  not the time. Put a reverse proxy (nginx `client_header_timeout`) in front where that
  matters. The value is accepted and otherwise unused.
- HTTP_READ_TIMEOUT and HTTP_WRITE_TIMEOUT: uvicorn enforces neither; the app does
  (`timeouts.TimeoutMiddleware`): 408 when the body is slower than the read timeout,
  503 when no response started within the write timeout. The write timeout also
  bounds graceful shutdown (`timeout_graceful_shutdown`): in-flight requests get that
  long once `should_exit` is set.

uvicorn's signal handlers are disabled: the caller owns SIGTERM/SIGINT (the worker
runner's graceful shutdown) and stops the server by setting `server.should_exit`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from datetime import timedelta

import uvicorn
from litestar import Litestar

from vesper.entrypoints.settings import HttpSettings


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process around it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _whole_seconds(value: timedelta, *, minimum: int = 1) -> int:
    return max(minimum, math.ceil(value.total_seconds()))


def build_server(
    app: Litestar, settings: HttpSettings, *, access_log: bool = False
) -> uvicorn.Server:
    """A server for `app` on settings.host:port; run it with `await server.serve()`.

    Stop it by setting `server.should_exit = True`: it stops accepting, lets in-flight
    requests finish within the write timeout, runs the app's shutdown hooks and returns.
    Logging is left as the process configured it (uvicorn's loggers: `uvicorn.error`,
    and `uvicorn.access` when `access_log` is on).
    """
    idle = settings.idle_timeout if settings.idle_timeout > timedelta(0) else settings.read_timeout
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        timeout_keep_alive=_whole_seconds(idle) if idle > timedelta(0) else 5,
        timeout_graceful_shutdown=(
            _whole_seconds(settings.write_timeout)
            if settings.write_timeout > timedelta(0)
            else None
        ),
        access_log=access_log,
        log_config=None,
        lifespan="on",
        server_header=False,
    )
    return EmbeddedServer(config)
