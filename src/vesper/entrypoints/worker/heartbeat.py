"""The loops that keep a worker's place and its leases: a heartbeat that renews the
leases the core selects (on the beat lane), the local lease deadlines on a timer of
their own, and reaping and lease expiry on the main lane, never awaited by the heartbeat."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial

from vesper.application.metrics import JobMetrics
from vesper.application.policies import Policies
from vesper.application.worker import Attempt, WorkerCore
from vesper.domain.fleet import WorkerProcess
from vesper.entrypoints.worker.lanes import Lane
from vesper.entrypoints.worker.report import Report
from vesper.entrypoints.worker.uses import WorkerUseCases

log = logging.getLogger("vesper.worker")

StopConsumers = Callable[[Sequence[Attempt], str], None]


class Heartbeat:
    """Runs from `start()` until `stop()`.

    Args:
        stop_consumers: told of the attempts the core gave up (with the line to log):
            their consumers must stop.
        wake: claim now (reaping made jobs claimable).
    """

    def __init__(
        self,
        *,
        core: WorkerCore,
        uses: WorkerUseCases,
        identity: WorkerProcess,
        policies: Policies,
        fleet_log_interval: float,
        main: Lane,
        beat: Lane,
        metrics: JobMetrics,
        report: Report,
        stop_consumers: StopConsumers,
        wake: Callable[[], None],
    ) -> None:
        self.core = core
        self.uses = uses
        self.identity = identity
        self.policies = policies
        self.fleet_log_interval = fleet_log_interval
        self.main = main
        self.beat_lane = beat
        self.metrics = metrics
        self.report = report
        self.stop_consumers = stop_consumers
        self.wake = wake
        # when the store last heard from this process (it registered just before)
        self.said_alive_at = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self._maintenance: asyncio.Task[None] | None = None
        self._maintenance_failures = 0
        self._fleet_log: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop()),
            asyncio.create_task(self._deadline_loop()),
        ]

    async def stop(self) -> None:
        """Cancel the loops and any maintenance or fleet line in flight."""
        tasks = self._tasks + [t for t in (self._maintenance, self._fleet_log) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _heartbeat_loop(self) -> None:
        interval = self.policies.heartbeat.total_seconds()
        last_fleet_log = time.monotonic()
        failures = 0
        while True:
            await asyncio.sleep(interval)
            try:
                await self.beat()
                if failures:
                    log.info("heartbeat works again after %d failures", failures)
                failures = 0
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 10 == 0:
                    log.warning("heartbeat failed (%d in a row): %s", failures, exc)
            self.abandon_overdue()
            if time.monotonic() - last_fleet_log >= self.fleet_log_interval:
                last_fleet_log = time.monotonic()
                self.report.summary()
                if self._fleet_log is None or self._fleet_log.done():
                    fleet = self.report.fleet(self.main, self.uses.get_fleet)
                    self._fleet_log = asyncio.create_task(fleet)

    async def beat(self) -> None:
        """One heartbeat: say this process lives, renew its leases, start a maintenance
        round unless one runs."""
        await self.say_alive()
        renewal = self.core.renewal()
        if renewal.attempts:
            check = await self.beat_lane.run(partial(self.uses.renew_leases.check, renewal.leases))
            renewed = self.core.renewed(renewal, check.lost, check.cancelled)
            self.metrics.leases_renewed(renewed.renewed)
            if renewed.lost:
                self.metrics.leases_lost(len(renewed.lost))
            self.stop_consumers(
                renewed.lost, "job %s: lease lost; stopping it, nothing will be recorded"
            )
            self.stop_consumers(renewed.cancelled, "job %s: cancelled on request; stopping it")
        if self._maintenance is None or self._maintenance.done():
            self._maintenance = asyncio.create_task(self._maintain())

    async def say_alive(self) -> None:
        """Heartbeat the process's registration (again, if it had been reaped)."""
        if not await self.beat_lane.run(partial(self.uses.heartbeat_worker, self.identity)):
            log.warning("worker %s had been reaped as dead; registered again", self.identity.id)
        self.said_alive_at = time.monotonic()

    async def alive_before_claiming(self) -> None:
        """Heartbeat first unless the store heard from this process in the last half of
        dead-after: after an outage longer than dead-after, another process reaps this
        one as soon as the database is back, and would end the leases of jobs claimed
        before this process's next heartbeat (R5 at full scale: 8 jobs run twice, 0.3 s
        apart). Costs nothing while heartbeats succeed."""
        if time.monotonic() - self.said_alive_at > self.policies.dead_after.total_seconds() / 2:
            await self.say_alive()

    async def _maintain(self) -> None:
        """Reap dead workers and end overdue leases (one round at a time, not awaited by
        the heartbeat: it may wait for the main lane)."""
        try:
            ended = await self.main.run(self.uses.reap_dead_workers)
            ended += await self.main.run(self.uses.expire_leases)
        except Exception as exc:
            self._maintenance_failures += 1
            if self._maintenance_failures == 1 or self._maintenance_failures % 10 == 0:
                log.warning(
                    "reaping dead workers failed (%d in a row): %s", self._maintenance_failures, exc
                )
            return
        self._maintenance_failures = 0
        if ended:
            log.info("%d jobs of dead or silent workers are claimable again", len(ended))
            self.wake()

    async def _deadline_loop(self) -> None:
        """Check local lease deadlines on a timer of their own: a renewal stuck on a silent
        network (the heartbeat awaits it) must not keep a job running past its lease."""
        period = min(
            self.policies.heartbeat.total_seconds(), self.policies.lease.total_seconds() / 20
        )
        while True:
            await asyncio.sleep(period)
            self.abandon_overdue()

    def abandon_overdue(self) -> None:
        """Stop jobs whose lease could not be renewed in time: another worker may own them."""
        self.stop_consumers(
            self.core.overdue(), "job %s: lease not renewed before it expires; stopping it"
        )
