"""Waiting for the store: at start-up until it answers (or a stop), at shutdown until
the grace period ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from vesper.domain.errors import SchemaNotMigrated
from vesper.entrypoints.worker.lanes import Lane

log = logging.getLogger("vesper.worker")
T = TypeVar("T")

MAX_ERROR_BACKOFF = 30.0


class StoppedWaiting(Exception):
    """stop() came while the runner waited for the store; nothing is registered."""


class StoreWait:
    """One wait for the store: a capped backoff between attempts, a log line for each
    failed one, but a schema that is not migrated is said once (it stays so until an
    operator acts; a line per retry would bury every other line)."""

    def __init__(self) -> None:
        self.failures = 0
        self._told_not_migrated = False

    def failed(self, exc: Exception) -> float:
        """Log the failure; returns the seconds to wait before the next attempt."""
        self.failures += 1
        delay: float = min(0.5 * 2.0 ** min(self.failures, 10), MAX_ERROR_BACKOFF)
        if not isinstance(exc, SchemaNotMigrated):
            log.warning(
                "store not reachable (attempt %d), retrying in %.1fs: %s", self.failures, delay, exc
            )
        elif not self._told_not_migrated:
            self._told_not_migrated = True
            log.error("%s; the workers wait for it", exc)
        return delay


async def sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stopping` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


async def until_stopped(lane: Lane, call: Callable[[], T], stopping: asyncio.Event) -> T:
    """`call()` on `lane`, retried while the store fails (start-up: the database may
    be down or not migrated yet).

    Raises:
        StoppedWaiting: `stopping` was set first. A call in flight is abandoned, not
            awaited (a connection attempt can take seconds; a SIGTERM'd process exits
            at once): should it register after all, the worker is reaped.
    """
    wait = StoreWait()
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        while not stopping.is_set():
            attempt = asyncio.ensure_future(lane.run(call))
            await asyncio.wait({attempt, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not attempt.done():
                attempt.cancel()
                break
            try:
                return attempt.result()
            except Exception as exc:
                await sleep_unless(stopping, wait.failed(exc))
    finally:
        stopped.cancel()
    raise StoppedWaiting


async def retrying(what: str, lane: Lane, call: Callable[[], T], *, until: float) -> T:
    """`call()` on `lane`, retried with a capped backoff while it fails, until `until`
    (time.monotonic()), when the last error is raised (shutdown: the grace).

    A try after a dropped connection (a terminated backend, a server restart) runs on a
    fresh one: told of the disconnect, SQLAlchemy's pool replaces every connection
    opened before it instead of handing the next dead one out.
    """
    failures = 0
    while True:
        try:
            return await lane.run(call)
        except Exception as exc:
            failures += 1
            delay = min(0.1 * 2 ** min(failures, 10), MAX_ERROR_BACKOFF)
            left = until - time.monotonic()
            if left <= 0:
                raise
            delay = min(delay, left)
            log.warning(
                "store not reachable for %s (attempt %d), retrying in %.1fs: %s",
                what,
                failures,
                delay,
                exc,
            )
            await asyncio.sleep(delay)
