"""Running a worker process: consumer checks, signals, the event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from vesper.entrypoints.worker.runner import WorkerRunner

if TYPE_CHECKING:
    from vesper.entrypoints.app import App

log = logging.getLogger("vesper.worker")


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
    log.warning("no consumer is registered: this process runs no workers, jobs wait in the queue")
    return False


def build_runner(app: App) -> WorkerRunner:
    runner: WorkerRunner = app.container.worker_runner(consumers=app.consumers)
    return runner


async def serve_worker(runner: WorkerRunner, app: App) -> None:
    """Run `runner` with signal handling: the first SIGTERM/SIGINT stops gracefully, the
    second exits at once (leases then expire as after a crash)."""
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info(
                "%s received: finishing running jobs, then exiting", signal.Signals(signum).name
            )
            runner.stop()
        else:
            log.warning("second signal: exiting now")
            sys.stderr.flush()
            os._exit(1)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    unsubscribe = app.container.job_signal().subscribe(runner.wake)
    app.container.job_listener()  # PostgreSQL: LISTEN; closed with the container
    try:
        await runner.run()
    finally:
        unsubscribe()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def run_worker(app: App) -> None:
    if not check_consumers(app):
        return
    runner = build_runner(app)
    try:
        asyncio.run(serve_worker(runner, app))
    finally:
        app.close()
