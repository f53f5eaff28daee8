"""What operators and producers do with jobs they know: look, list, cancel, retry."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

import attrs

from vesper.application.metrics import NO_METRICS, JobMetrics
from vesper.application.ports import ActivityJobRepository, JobRepository, SummaryJobRepository
from vesper.domain.activity import Activity
from vesper.domain.bulk import BulkAction, BulkBatch, BulkFilter
from vesper.domain.job import JobId, JobRecord
from vesper.domain.query import JobPage, JobQuery
from vesper.domain.queues import DEFAULT_QUEUE
from vesper.domain.states import Status
from vesper.domain.stats import QueueStats, QueueSummary

# jobs changed per bulk statement: each batch is one short transaction (some ms), so a
# bulk action over a million jobs never holds locks or a snapshot for long
BULK_BATCH = 1000


@attrs.frozen
class GetJob:
    """The job with this id. Raises JobNotFound."""

    jobs: JobRepository

    def __call__(self, job_id: JobId) -> JobRecord:
        return self.jobs.get(job_id)


@attrs.frozen
class ListJobs:
    """A page of jobs matching the query, newest first."""

    jobs: JobRepository

    def __call__(self, query: JobQuery) -> JobPage:
        return self.jobs.find(query)


@attrs.frozen
class CancelJob:
    """pending/failed -> cancelled; a processing job gets a cancel request, which its
    worker acts on at its next heartbeat (the job is returned still processing, with
    `cancel_requested_at`). Raises JobNotFound or IllegalTransition."""

    jobs: JobRepository
    metrics: JobMetrics = NO_METRICS

    def __call__(self, job_id: JobId) -> JobRecord:
        job = self.jobs.cancel(job_id)
        if job.status is Status.CANCELLED:
            self.metrics.jobs_cancelled([job])
        return job


@attrs.frozen
class RetryJob:
    """dlq/failed/cancelled -> pending, due now. Raises JobNotFound or IllegalTransition."""

    jobs: JobRepository

    def __call__(self, job_id: JobId) -> JobRecord:
        return self.jobs.retry(job_id)


@attrs.frozen
class GetStats:
    """Counts by status and priority, and the age of the oldest due job."""

    jobs: JobRepository

    def __call__(self) -> QueueStats:
        return self.jobs.stats()


# the overview counts each status up to here: cheap on a table of any size, and a
# figure above it ("10000+") tells an operator all a glance needs (docs/benchmarks.md)
SUMMARY_CAP = 10_000


@attrs.frozen
class GetSummary:
    """Jobs by status, each counted up to `cap` (more shows as "more than cap"), and the
    age of the oldest due job. A store without `capabilities.summary` counts them all
    (stats), and the same cap is applied, so that every store's overview reads alike;
    GetStats keeps the exact counts."""

    jobs: JobRepository
    cap: int = SUMMARY_CAP

    def __call__(self) -> QueueSummary:
        if not self.jobs.capabilities.summary:
            return QueueSummary.of(self.jobs.stats(), self.cap)
        return cast(SummaryJobRepository, self.jobs).summary(cap=self.cap)


@attrs.frozen
class BulkJobs:
    """Retry or cancel every job matching a filter, `batch` jobs per transaction.

    Only jobs last changed before the action began are taken (`touched_before`), and
    each batch starts after the last job the previous one looked at (`after_seq`), so
    the loop ends and a job is looked at once. A retry skips a finished job whose
    unique key an active job of its queue holds (never two active jobs with one key in
    one queue).

    Returns:
        How many jobs changed, and how many a retry skipped (`last_seq`: the last job
        looked at).

    Raises:
        InvalidRequest: a filter the action cannot take (a status it does not start
            from).
    """

    jobs: JobRepository
    batch: int = BULK_BATCH
    metrics: JobMetrics = NO_METRICS

    def __call__(self, action: BulkAction, where: BulkFilter) -> BulkBatch:
        where.statuses(action)  # a status the action cannot take: refused before any work
        if where.queue is not None and not self.jobs.capabilities.queues:
            # a store without named queues holds every job in "default"
            if where.queue != DEFAULT_QUEUE:
                return BulkBatch()
            where = attrs.evolve(where, queue=None)
        where = attrs.evolve(where, touched_before=self.jobs.now())
        changed = skipped = 0
        last: int | None = None
        while True:
            batch = self.jobs.bulk(action, where, limit=self.batch)
            if batch.last_seq is None:
                return BulkBatch(changed=changed, skipped=skipped, last_seq=last)
            changed += batch.changed
            skipped += batch.skipped
            last = batch.last_seq
            if action is BulkAction.CANCEL and batch.kinds:
                self.metrics.jobs_cancelled_by_kind(batch.kinds)
            where = attrs.evolve(where, after_seq=batch.last_seq)


@attrs.frozen
class GetActivity:
    """Finished work per minute over the last `window`, counted by the store (so for the
    whole fleet); None when the store does not count it (`capabilities.activity`)."""

    jobs: JobRepository
    window: timedelta = timedelta(hours=1)

    def __call__(self) -> Activity | None:
        if not self.jobs.capabilities.activity:
            return None
        return cast(ActivityJobRepository, self.jobs).activity(window=self.window)
