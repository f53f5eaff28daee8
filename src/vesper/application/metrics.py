"""The metrics port: what the use cases and the worker report as it happens.

Gauges that describe the whole fleet (queue depth, live processes) are not pushed
here: an adapter reads them from the store when it is scraped, so that any process
reports the same truth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from vesper.domain.job import JobRecord
from vesper.domain.states import Status


class JobMetrics(Protocol):
    def jobs_enqueued(self, jobs: Sequence[JobRecord]) -> None:
        """Jobs created (idempotent replays excluded)."""
        ...

    def job_started(self, job: JobRecord, queue_wait_seconds: float) -> None:
        """A claimed job's consumer starts; the wait is from run_at to the claim."""
        ...

    def job_finished(self, job: JobRecord, outcome: str, run_seconds: float) -> None:
        """An attempt ended: outcome is done, failed (a retry is scheduled), dlq,
        lease_lost or abandoned (nothing recorded)."""
        ...

    def jobs_cancelled(self, jobs: Sequence[JobRecord]) -> None: ...

    def leases_renewed(self, count: int) -> None: ...

    def leases_lost(self, count: int) -> None: ...

    def processes_reaped(self, count: int) -> None: ...

    def jobs_pruned(self, counts: Mapping[Status, int]) -> None:
        """Finished jobs deleted by retention, by status."""
        ...

    def jobs_cancelled_by_kind(self, counts: Mapping[tuple[str, int], int]) -> None:
        """Jobs cancelled together (a bulk cancel), counted by (type, priority)."""
        ...


class NoMetrics:
    """Reports nothing: for embedding and tests that do not look at metrics."""

    def jobs_enqueued(self, jobs: Sequence[JobRecord]) -> None:
        pass

    def job_started(self, job: JobRecord, queue_wait_seconds: float) -> None:
        pass

    def job_finished(self, job: JobRecord, outcome: str, run_seconds: float) -> None:
        pass

    def jobs_cancelled(self, jobs: Sequence[JobRecord]) -> None:
        pass

    def leases_renewed(self, count: int) -> None:
        pass

    def leases_lost(self, count: int) -> None:
        pass

    def processes_reaped(self, count: int) -> None:
        pass

    def jobs_pruned(self, counts: Mapping[Status, int]) -> None:
        pass

    def jobs_cancelled_by_kind(self, counts: Mapping[tuple[str, int], int]) -> None:
        pass


NO_METRICS = NoMetrics()
