"""The fleet of worker processes: joining, staying alive, leaving, and reaping the dead."""

from __future__ import annotations

import attrs

from vesper.application.metrics import NO_METRICS, JobMetrics
from vesper.application.policies import Policies
from vesper.application.ports import JobRepository, WorkerRegistry
from vesper.domain.fleet import Fleet, WorkerProcess
from vesper.domain.job import JobRecord


@attrs.frozen
class RegisterWorker:
    """Add a process to the fleet."""

    registry: WorkerRegistry

    def __call__(self, process: WorkerProcess) -> WorkerProcess:
        return self.registry.register(process)


@attrs.frozen
class HeartbeatWorker:
    """Mark a process alive; if it had been reaped meanwhile, register it again.

    Returns:
        False if the process had to register again (its old leases were released).
    """

    registry: WorkerRegistry

    def __call__(self, process: WorkerProcess) -> bool:
        if self.registry.heartbeat(process.id):
            return True
        self.registry.register(process)
        return False


@attrs.frozen
class DeregisterWorker:
    """Remove a process from the fleet (on a clean exit)."""

    registry: WorkerRegistry

    def __call__(self, worker_id: str) -> None:
        self.registry.deregister(worker_id)


@attrs.frozen
class ExpireLeases:
    """Make jobs whose lease expired claimable again (each counts a failed attempt)."""

    jobs: JobRepository

    def __call__(self) -> list[JobRecord]:
        return self.jobs.expire()


@attrs.frozen
class ReapDeadWorkers:
    """Remove processes silent for longer than dead_after and end their leases.

    If this process dies between the two steps, the leases still end when they expire.

    Returns:
        The jobs whose leases were ended.
    """

    registry: WorkerRegistry
    jobs: JobRepository
    settings: Policies = Policies()
    metrics: JobMetrics = NO_METRICS

    def __call__(self) -> list[JobRecord]:
        dead = self.registry.reap(dead_after=self.settings.dead_after)
        if not dead:
            return []
        self.metrics.processes_reaped(len(dead))
        return self.jobs.expire(worker_ids=dead)


@attrs.frozen
class GetFleet:
    """The registered processes, grouped by machine."""

    registry: WorkerRegistry

    def __call__(self) -> Fleet:
        return Fleet.of(self.registry.processes())
