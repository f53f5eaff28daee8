"""Retention: how long finished jobs are kept (VESPER_RETAIN_*), pruning them in small
batches, and deleting one on request (DELETE /jobs/{id})."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import attrs

from vesper.application.metrics import NO_METRICS, JobMetrics
from vesper.application.ports import JobRepository
from vesper.domain.job import JobId, JobRecord
from vesper.domain.retention import PRUNE_BATCH, check_ages
from vesper.domain.states import Status

DEFAULT_AGES: Mapping[Status, timedelta] = {
    Status.DONE: timedelta(hours=24),
    Status.CANCELLED: timedelta(hours=24),
    Status.DLQ: timedelta(days=7),
}


def _checked(ages: Mapping[Status, timedelta]) -> Mapping[Status, timedelta]:
    check_ages(ages)
    return dict(ages)


@attrs.frozen(kw_only=True)
class Retention:
    """How long each finished status is kept, from finished_at; a status absent is
    kept for ever (`forever`)."""

    ages: Mapping[Status, timedelta] = attrs.field(
        factory=lambda: dict(DEFAULT_AGES), converter=_checked, hash=False
    )
    batch: int = PRUNE_BATCH  # jobs deleted per store call

    @property
    def prunes(self) -> bool:
        """Whether any status is ever pruned."""
        return bool(self.ages)


@attrs.frozen
class PruneJobs:
    """Delete one batch of the finished jobs past their age; returns how many of each
    status. The caller repeats while a batch comes back full."""

    jobs: JobRepository
    retention: Retention = Retention()
    metrics: JobMetrics = NO_METRICS

    def __call__(self) -> dict[Status, int]:
        if not self.retention.prunes:
            return {}
        counts = self.jobs.prune(self.retention.ages, limit=self.retention.batch)
        if counts:
            self.metrics.jobs_pruned(counts)
        return counts


@attrs.frozen
class DeleteJob:
    """Delete a finished job; returns it as it was. Raises JobNotFound, or
    IllegalTransition for a job that is not finished."""

    jobs: JobRepository

    def __call__(self, job_id: JobId) -> JobRecord:
        return self.jobs.delete(job_id)
