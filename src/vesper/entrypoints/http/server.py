"""Serving the app with uvicorn, inside a loop that may also run workers.

uvicorn supports only some of the Go service's HTTP_* timeouts:

- HTTP_IDLE_TIMEOUT -> `timeout_keep_alive`: an idle keep-alive connection is closed
  after it (whole seconds, at least 1; zero falls back to HTTP_READ_TIMEOUT, as in Go).
- HTTP_READ_HEADER_TIMEOUT: uvicorn has no such timer; vesper's protocol
  (`protocol.GuardedHttpToolsProtocol`) closes a connection whose request head is not
  complete in time (zero falls back to HTTP_READ_TIMEOUT, and both zero disable it, as
  in Go). The same protocol answers 431 to a head above VESPER_MAX_HEADER_BYTES and 503
  to connections past VESPER_MAX_CONNECTIONS.
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
import logging
import math
from collections.abc import Iterator
from datetime import timedelta

import uvicorn
from litestar import Litestar

from vesper.entrypoints.http.protocol import ConnectionLimits, protocol_class
from vesper.entrypoints.settings import HttpSettings

log = logging.getLogger("vesper.http")

# descriptors kept for everything but client connections: the listening socket, the
# store's pool, log files, the worker's connections
RESERVED_DESCRIPTORS = 64


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
    head_timeout = next(
        (t for t in (settings.read_header_timeout, settings.read_timeout) if t > timedelta(0)),
        None,
    )
    limits = ConnectionLimits(
        max_head_bytes=settings.max_header_bytes,
        head_timeout=head_timeout.total_seconds() if head_timeout is not None else None,
        max_connections=_connections_within_descriptors(settings.max_connections),
    )
    idle = settings.idle_timeout if settings.idle_timeout > timedelta(0) else settings.read_timeout
    config = uvicorn.Config(
        app,
        http=protocol_class(limits),
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


def raise_open_files_limit() -> int | None:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (each connection is a
    descriptor; distributions default the soft limit to 1024). Returns the soft limit,
    None where there is none (Windows)."""
    try:
        import resource  # noqa: PLC0415 (POSIX only)
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if resource.RLIM_INFINITY in (hard, soft) or soft >= hard:
        return soft if soft != resource.RLIM_INFINITY else None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # macOS caps the hard limit below what it reports
        log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, exc)
        return soft
    return hard


def _connections_within_descriptors(wanted: int) -> int:
    """`wanted`, or fewer when the open files limit cannot hold that many connections
    (past it every accept fails, unlogged, and so does every new request)."""
    try:
        import resource  # noqa: PLC0415 (POSIX only)
    except ImportError:
        return wanted
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or wanted <= soft - RESERVED_DESCRIPTORS:
        return wanted
    allowed = max(1, soft - RESERVED_DESCRIPTORS)
    log.warning(
        "VESPER_MAX_CONNECTIONS=%d is above what the open files limit (%d) holds: "
        "serving at most %d connections",
        wanted,
        soft,
        allowed,
    )
    return allowed
