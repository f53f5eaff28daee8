"""The scheduler loop: a worker process's periodic schedules, fired tick by tick.

A thin driver around `vesper.application.periodic.PeriodicScheduler`, which decides
what is due: the loop declares the schedules (at start and every heartbeat interval,
so that the store can tell the ones no process declares any more), runs a round on the
main lane, and sleeps until the next tick as the store's clock counts it (the sleep
itself is monotonic: a wrong local wall clock changes nothing).
"""

from __future__ import annotations

import asyncio
import logging
import time

from vesper.application.periodic import PeriodicScheduler
from vesper.entrypoints.worker.lanes import Lane

log = logging.getLogger("vesper.periodic")

# past the tick, so that the round after the sleep reads a store time at or after it
WAKE_MARGIN_S = 0.002


class SchedulerLoop:
    """Runs from `start()` until `stop()`.

    Args:
        declare_every: seconds between two declarations of the schedules; also the
            longest sleep, so that a schedule with rare ticks stays declared.
    """

    def __init__(self, *, scheduler: PeriodicScheduler, lane: Lane, declare_every: float) -> None:
        self.scheduler = scheduler
        self.lane = lane
        self.declare_every = declare_every
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        names = ", ".join(s.name for s in self.scheduler.schedules)
        log.info("periodic schedules: %s", names)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        failures = 0
        declared_at: float | None = None
        while True:
            try:
                if declared_at is None or time.monotonic() - declared_at >= self.declare_every:
                    await self.lane.run(self.scheduler.declare)
                    declared_at = time.monotonic()
                fired = await self.lane.run(self.scheduler.fire)
            except Exception as exc:
                failures += 1
                # capped low: each failed round may be a tick missed (caught up after)
                delay = min(0.5 * 2 ** min(failures, 10), self.declare_every)
                if failures == 1 or failures % 10 == 0:
                    log.warning(
                        "periodic round failed (%d in a row), retrying in %.1fs: %s",
                        failures,
                        delay,
                        exc,
                    )
                await asyncio.sleep(delay)
                continue
            if failures:
                log.info("periodic rounds work again after %d failures", failures)
                failures = 0
            for name, tick, created in fired.submitted:
                if created:
                    log.info("periodic %r: tick %s submitted", name, tick.isoformat())
            delay = self.declare_every
            if fired.next_tick is not None:
                until_tick = (fired.next_tick - fired.now).total_seconds() + WAKE_MARGIN_S
                delay = min(max(until_tick, WAKE_MARGIN_S), delay)
            await asyncio.sleep(delay)
