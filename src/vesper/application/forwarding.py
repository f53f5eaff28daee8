"""A job repository that forwards every call to another: the base of decorators that
change one method (application/group_commit.py) and keep the rest of the port."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import cast

from vesper.application.ports import (
    ActivityJobRepository,
    CompletingJobRepository,
    JobRepository,
    QueueingCompletingJobRepository,
    QueueingJobRepository,
    Submitted,
    SummaryJobRepository,
)
from vesper.domain.activity import Activity
from vesper.domain.bulk import BulkAction, BulkBatch, BulkFilter
from vesper.domain.job import Failure, JobId, JobRecord, LeaseRef, Snoozed
from vesper.domain.query import JobPage, JobQuery
from vesper.domain.queues import QueueChange, QueueSettings, QueueState
from vesper.domain.states import Status
from vesper.domain.stats import QueueStats, QueueSummary
from vesper.domain.submission import NewJob


class ForwardingJobRepository:
    """Every method of the port, straight through to `jobs`."""

    def __init__(self, jobs: JobRepository) -> None:
        self._jobs = jobs
        self.capabilities = jobs.capabilities

    def now(self) -> datetime:
        return self._jobs.now()

    def submit(self, jobs: Sequence[NewJob], *, now: datetime | None = None) -> list[Submitted]:
        return self._jobs.submit(jobs, now=now)

    def get(self, job_id: JobId) -> JobRecord:
        return self._jobs.get(job_id)

    def find(self, query: JobQuery) -> JobPage:
        return self._jobs.find(query)

    def claim(
        self,
        *,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None = None,
        queues: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> list[JobRecord]:
        if queues is None:  # a store without queues takes no such argument
            return self._jobs.claim(
                worker_id=worker_id, limit=limit, lease=lease, types=types, now=now
            )
        return cast(QueueingJobRepository, self._jobs).claim(
            worker_id=worker_id, limit=limit, lease=lease, types=types, queues=queues, now=now
        )

    def complete(
        self,
        leases: Sequence[LeaseRef],
        *,
        now: datetime | None = None,
        results: Mapping[JobId, str] | None = None,
    ) -> list[JobRecord]:
        if results:  # only then: a store written before results keeps working
            return self._jobs.complete(leases, now=now, results=results)
        return self._jobs.complete(leases, now=now)

    def complete_and_claim(
        self,
        leases: Sequence[LeaseRef],
        *,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None = None,
        queues: Sequence[str] | None = None,
        now: datetime | None = None,
        results: Mapping[JobId, str] | None = None,
    ) -> tuple[list[JobRecord], list[JobRecord]]:
        """Only called where `capabilities.complete_and_claim` (the wrapped store's) is
        set, so the wrapped store has it."""
        if queues is not None:
            return cast(QueueingCompletingJobRepository, self._jobs).complete_and_claim(
                leases,
                worker_id=worker_id,
                limit=limit,
                lease=lease,
                types=types,
                queues=queues,
                now=now,
                results=results,
            )
        jobs = cast(CompletingJobRepository, self._jobs)
        if results:
            return jobs.complete_and_claim(
                leases,
                worker_id=worker_id,
                limit=limit,
                lease=lease,
                types=types,
                now=now,
                results=results,
            )
        return jobs.complete_and_claim(
            leases, worker_id=worker_id, limit=limit, lease=lease, types=types, now=now
        )

    # only called where `capabilities.queues` (the wrapped store's) is set

    def queue_settings(self) -> list[QueueSettings]:
        return cast(QueueingJobRepository, self._jobs).queue_settings()

    def configure_queue(
        self, name: str, change: QueueChange, *, now: datetime | None = None
    ) -> QueueSettings:
        return cast(QueueingJobRepository, self._jobs).configure_queue(name, change, now=now)

    def queue_states(self, *, now: datetime | None = None) -> list[QueueState]:
        return cast(QueueingJobRepository, self._jobs).queue_states(now=now)

    def fail(self, failures: Sequence[Failure], *, now: datetime | None = None) -> list[JobRecord]:
        return self._jobs.fail(failures, now=now)

    def renew(
        self, leases: Sequence[LeaseRef], *, lease: timedelta, now: datetime | None = None
    ) -> list[JobRecord]:
        return self._jobs.renew(leases, lease=lease, now=now)

    def release(
        self, leases: Sequence[LeaseRef], *, now: datetime | None = None
    ) -> list[JobRecord]:
        return self._jobs.release(leases, now=now)

    def expire(
        self, *, worker_ids: Sequence[str] = (), now: datetime | None = None
    ) -> list[JobRecord]:
        return self._jobs.expire(worker_ids=worker_ids, now=now)

    def cancel(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        return self._jobs.cancel(job_id, now=now)

    def retry(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        return self._jobs.retry(job_id, now=now)

    def stats(self, *, now: datetime | None = None) -> QueueStats:
        return self._jobs.stats(now=now)

    def get_many(self, job_ids: Sequence[JobId]) -> list[JobRecord]:
        return self._jobs.get_many(job_ids)

    def prune(
        self,
        older_than: Mapping[Status, timedelta],
        *,
        limit: int,
        now: datetime | None = None,
    ) -> dict[Status, int]:
        return self._jobs.prune(older_than, limit=limit, now=now)

    def delete(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        return self._jobs.delete(job_id, now=now)

    def snooze(self, snoozes: Sequence[Snoozed], *, now: datetime | None = None) -> list[JobRecord]:
        return self._jobs.snooze(snoozes, now=now)

    def bulk(
        self,
        action: BulkAction,
        where: BulkFilter,
        *,
        limit: int,
        now: datetime | None = None,
    ) -> BulkBatch:
        return self._jobs.bulk(action, where, limit=limit, now=now)

    def activity(self, *, window: timedelta, now: datetime | None = None) -> Activity:
        """Only called where `capabilities.activity` (the wrapped store's) is set."""
        return cast(ActivityJobRepository, self._jobs).activity(window=window, now=now)

    def summary(self, *, cap: int, now: datetime | None = None) -> QueueSummary:
        """Only called where `capabilities.summary` (the wrapped store's) is set."""
        return cast(SummaryJobRepository, self._jobs).summary(cap=cap, now=now)
