"""What operators and producers do with jobs they know: look, list, cancel, retry."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

import attrs

from vesper.application.metrics import NO_METRICS, JobMetrics
from vesper.application.ports import ActivityJobRepository, JobRepository, SummaryJobRepository
from vesper.domain.activity import Activity
from vesper.domain.job import JobId, JobRecord
from vesper.domain.query import JobPage, JobQuery
from vesper.domain.stats import QueueStats, QueueSummary


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
    """pending/failed -> cancelled. Raises JobNotFound or IllegalTransition."""

    jobs: JobRepository
    metrics: JobMetrics = NO_METRICS

    def __call__(self, job_id: JobId) -> JobRecord:
        job = self.jobs.cancel(job_id)
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
class GetActivity:
    """Finished work per minute over the last `window`, counted by the store (so for the
    whole fleet); None when the store does not count it (`capabilities.activity`)."""

    jobs: JobRepository
    window: timedelta = timedelta(hours=1)

    def __call__(self) -> Activity | None:
        if not self.jobs.capabilities.activity:
            return None
        return cast(ActivityJobRepository, self.jobs).activity(window=self.window)
