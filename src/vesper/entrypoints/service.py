"""Running the service: the HTTP API and the workers in one process, or either alone.

One asyncio loop serves both. The first SIGTERM/SIGINT stops claiming and stops the
HTTP server (in-flight requests finish), lets running jobs finish within the grace
period, releases the rest and deregisters; a second signal exits at once (leases then
expire as after a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from vesper.adapters.otel.tracing import TracingConfigError
from vesper.application.consumers import Consumers
from vesper.application.periodic import check_schedules
from vesper.domain.errors import InvalidSchedule, StoreUnavailable
from vesper.domain.periodic import Schedule
from vesper.entrypoints.container import Container
from vesper.entrypoints.settings import Settings, describe_store
from vesper.entrypoints.supervisor import inherited_listener, stop_pipe, supervised
from vesper.entrypoints.worker.runner import StoreWait, WorkerRunner

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("vesper")
T = TypeVar("T")


class App(Protocol):
    """What the service runs: a `vesper.App` (entrypoints/app.py, which imports this
    module to run itself: naming it here would make an import circle)."""

    consumers: Consumers
    schedules: list[Schedule]

    @property
    def settings(self) -> Settings: ...

    @property
    def container(self) -> Container: ...

    def close(self) -> None: ...


class MissingConsumer(SystemExit):
    """Production (or REQUIRE_CONSUMER=1) refuses to start without a consumer."""


def check_consumers(app: App) -> bool:
    """Whether workers should run; exits with one clear line when a consumer is required."""
    if app.consumers:
        return True
    if app.settings.consumer_required:
        reason = "APP_ENV=production" if app.settings.production else "REQUIRE_CONSUMER=1"
        raise MissingConsumer(
            f"vesper: no consumer is registered and {reason} requires one "
            "(register one with @app.consumer and pass --app module:attribute or VESPER_APP)"
        )
    log.warning("no consumer is registered: this process runs no workers; jobs wait in the queue")
    return False


def build_runner(app: App) -> WorkerRunner:
    runner: WorkerRunner = app.container.worker(
        consumers=app.consumers, schedules=list(app.schedules)
    )
    if (
        app.settings.worker.queues is not None
        and not runner.uses.claim_jobs.jobs.capabilities.queues
    ):
        raise SystemExit(
            f"vesper: VESPER_QUEUES: the store {app.settings.storage!r} has no named queues"
        )
    return runner


async def build_runner_when_reachable(app: App) -> WorkerRunner:
    """build_runner, retried with a capped backoff while the store cannot be opened: a
    database that is down at start-up is waited for, not a crash (and a crash loop)."""
    wait = StoreWait()
    while True:
        try:
            return await asyncio.to_thread(build_runner, app)
        except StoreUnavailable as exc:
            await asyncio.sleep(wait.failed(exc))


def build_http_server(app: App) -> uvicorn.Server:
    from vesper.entrypoints.http.app import create_app  # noqa: PLC0415
    from vesper.entrypoints.http.routes.metrics import metrics_route  # noqa: PLC0415
    from vesper.entrypoints.http.server import (  # noqa: PLC0415
        build_server,
        raise_open_files_limit,
    )

    raise_open_files_limit()  # before the limits are derived from it

    container = app.container
    http_app = create_app(
        container, settings=app.settings, route_handlers=[metrics_route(container)]
    )
    return build_server(http_app, app.settings.http)


class _Stopper:
    """The first SIGTERM/SIGINT stops the workers (gracefully) and the HTTP server; a
    second exits at once."""

    def __init__(self, server: uvicorn.Server | None) -> None:
        self.server = server
        self.runner: WorkerRunner | None = None
        self.stopping = asyncio.Event()
        self.signals_seen = 0

    def stop(self) -> None:
        self.stopping.set()
        if self.runner is not None:
            self.runner.stop()
        if self.server is not None:
            self.server.should_exit = True

    def on_signal(self, signum: int) -> None:
        self.signals_seen += 1
        if self.signals_seen == 1:
            log.info("%s received: shutting down gracefully", signal.Signals(signum).name)
            self.stop()
        else:
            log.warning("second signal: exiting now")
            sys.stderr.flush()
            os._exit(1)


async def serve(app: App, *, api: bool, workers: bool) -> None:
    """Run the API and/or the workers until a signal stops them.

    The HTTP server starts at once, before the store is opened: while the database is
    unreachable /health answers 200 and /ready and the store's routes 503, and the
    workers wait for the store (capped backoff) in a task of their own, so the process
    needs no restart when the database comes up.
    """
    log.info("%s", describe_store(app.settings))
    try:  # OTEL_TRACES_EXPORTER: a bad value stops start-up with one line
        app.container.global_tracing()
    except TracingConfigError as exc:
        raise SystemExit(f"vesper: {exc}") from None
    listening = (
        (inherited_listener() or listen(app.settings.http.host, app.settings.http.port))
        if api
        else None
    )
    if listening is not None:
        announce(listening, token=app.settings.http.api_token)
    with_workers = workers and check_consumers(app)
    if with_workers:
        try:  # a schedule its ticks could not submit stops start-up, in one line
            check_schedules(app.schedules, app.settings.policies)
        except InvalidSchedule as exc:
            raise SystemExit(f"vesper: {exc}") from None
    server = build_http_server(app) if api else None
    if not with_workers and server is None:
        return
    loop = asyncio.get_running_loop()
    stopper = _Stopper(server)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopper.on_signal, signum)
    watch_supervisor(loop, stopper)
    tasks: list[Awaitable[None]] = []
    if with_workers:
        app.container.job_signal()  # made here, before request threads may race to make it
        if server is None:  # a worker-only process serves /metrics on VESPER_METRICS_ADDR
            app.container.metrics_server()
        tasks.append(_run_workers(app, stopper))
    if server is not None and supervised():  # one of N API processes: its own /metrics too
        app.container.metrics_server()
    if server is not None and listening is not None:
        tasks.append(_serve_http(server, listening, stopper.stop))
    freeze_startup_objects()
    try:
        await asyncio.gather(*tasks)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def watch_supervisor(loop: asyncio.AbstractEventLoop, stopper: _Stopper) -> None:
    """Under `--processes N`: stop gracefully when the supervisor closes this process's
    stop pipe (it asks, or it died); the supervisor never writes, so readable is EOF."""
    fd = stop_pipe()
    if fd is None:
        return

    def stop() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        if not stopper.stopping.is_set():
            log.info("the supervisor asked this process to stop: shutting down gracefully")
            stopper.stop()

    loop.add_reader(fd, stop)


# Allocations between two young collections in a service process (CPython: 700). A
# drain of short jobs makes some 30 tracked objects a job, so at 700 a young collection
# ran every ~25 jobs, walking the jobs in flight each time: 10,000 took the worker's
# CPU a job from ~80 to ~60 us (in-process drain of 40,000 jobs, 50 slots, PostgreSQL).
# The garbage waiting for a collection stays small (10,000 objects at most).
GC_YOUNG_THRESHOLD = 10_000


def freeze_startup_objects() -> None:
    """Keep the objects of start-up (modules, the app, its routes, the store once it
    opened) out of every later garbage collection, and collect the young generation
    less often.

    Under load, objects of requests in flight live through several young collections
    and reach the oldest generation, whose collections then walk the whole heap: 27 of
    them in 10 s of an HTTP burst, 60-80 ms each, every request in flight stalled
    meanwhile. Frozen objects are never walked (gc.freeze; they are never freed either,
    and were not going to be). Called again once the workers' store is open.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


async def _run_workers(app: App, stopper: _Stopper) -> None:
    """Wait for the store (unless stopped meanwhile), then run the workers until stopped."""
    runner = await _unless_stopped(build_runner_when_reachable(app), stopper.stopping)
    if runner is None:  # stopped while waiting for the store
        return
    stopper.runner = runner
    unsubscribe = app.container.job_signal().subscribe(runner.wake)
    try:
        app.container.job_listener()  # the store's notifier, if any (PostgreSQL: LISTEN)
        freeze_startup_objects()  # the store, its engine and statements: start-up too
        if not stopper.stopping.is_set():
            await runner.run()  # sets its loop before its first await: stop() reaches it
    finally:
        unsubscribe()


async def _unless_stopped(work: Awaitable[T], stopping: asyncio.Event) -> T | None:
    """The result of `work`, or None (and `work` cancelled) if `stopping` is set first."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


def listen(host: str, port: int) -> socket.socket:
    """Bind the API's socket first, so that a taken port is one clear line, exit 1."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(
            f"vesper: cannot listen on {host}:{port} (API_ADDR): {exc.strerror}"
        ) from None
    sock.set_inheritable(True)
    return sock


def announce(sock: socket.socket, *, token: str | None) -> None:
    """One line with the address served; a warning when it is reachable from other
    hosts and no token guards it."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    log.info("vesper API listening on http://%s:%d", shown, port)
    if token is None and not ipaddress.ip_address(host).is_loopback:
        log.warning(
            "the API listens on %s, beyond this host, and VESPER_API_TOKEN is not set: "
            "anyone who reaches it can submit and cancel jobs",
            shown,
        )


async def _serve_http(
    server: uvicorn.Server, sock: socket.socket, stop_everything: Callable[[], None]
) -> None:
    try:
        await server.serve(sockets=[sock])
    finally:
        stop_everything()  # the server stopped: the workers stop too


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (a dependency but on Windows): the HTTP
    burst (W5) serves about a quarter more requests per CPU second than on asyncio's
    own loop. `choice` is VESPER_EVENT_LOOP (validated by Settings): asyncio keeps
    asyncio's loop; uvloop insists on uvloop."""
    if choice == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("vesper: VESPER_EVENT_LOOP=uvloop: uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def run(app: App, *, api: bool = True, workers: bool = True) -> None:
    """Block until the service stops; closes the store's connections at the end."""
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(app.settings.event_loop)) as runner:
            runner.run(serve(app, api=api, workers=workers))
    finally:
        app.close()
