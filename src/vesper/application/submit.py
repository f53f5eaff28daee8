"""Submitting jobs: one, or a batch that is inserted whole or not at all."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

import attrs

from vesper.application.group_commit import AsyncGroupCommit, GroupCommit
from vesper.application.metrics import NO_METRICS, JobMetrics
from vesper.application.policies import Policies
from vesper.application.ports import JobRepository, JobSignal, Submitted
from vesper.domain.errors import InvalidRequest
from vesper.domain.job import JobId
from vesper.domain.submission import JobRequest, NewJob, prepare


def new_job_id() -> JobId:
    return JobId(uuid.uuid4())


@attrs.frozen
class SubmitJobs:
    """Validate and insert a batch, all or nothing.

    Args:
        requests: the jobs, in the order they should be inserted.

    Returns:
        One Submitted per request; `created` is False for an idempotent replay.

    Raises:
        InvalidRequest: a request broke a rule (the field is named, with its index).
        IdempotencyConflict: a key is bound to a job with another body.
    """

    jobs: JobRepository
    settings: Policies = Policies()
    new_id: Callable[[], JobId] = new_job_id
    signal: JobSignal | None = None
    metrics: JobMetrics = NO_METRICS

    def __call__(self, requests: Sequence[JobRequest]) -> list[Submitted]:
        limits = self.settings.limits
        if not requests:
            raise InvalidRequest("jobs", "must hold at least one job")
        if len(requests) > limits.max_batch:
            raise InvalidRequest("jobs", f"must hold at most {limits.max_batch} jobs")
        prepared: list[NewJob] = []
        for index, request in enumerate(requests):
            try:
                prepared.append(_prepare(request, self.settings, self.new_id))
            except InvalidRequest as exc:
                raise InvalidRequest(f"jobs[{index}].{exc.field}", exc.message) from None
        submitted = self.jobs.submit(prepared)
        _announce(submitted, self.signal, self.metrics)
        return submitted


@attrs.frozen
class SubmitJob:
    """Validate and insert one job.

    Returns:
        The job, and whether it was created (False: an idempotent replay).

    Raises:
        InvalidRequest: the request broke a rule; the field is named.
        IdempotencyConflict: the key is bound to a job with another body.
    """

    jobs: JobRepository
    settings: Policies = Policies()
    new_id: Callable[[], JobId] = new_job_id
    signal: JobSignal | None = None
    metrics: JobMetrics = NO_METRICS
    # shared by the use cases of one process: concurrent calls commit together
    group: GroupCommit | None = None

    def __call__(self, request: JobRequest) -> Submitted:
        new_job = _prepare(request, self.settings, self.new_id)
        if self.group is not None:
            submitted = [self.group.submit(self.jobs, new_job)]
        else:
            submitted = self.jobs.submit([new_job])
        _announce(submitted, self.signal, self.metrics)
        return submitted[0]

    async def in_group(self, request: JobRequest, group: AsyncGroupCommit) -> Submitted:
        """The same for a coroutine: the job joins `group`'s next commit, and waiting
        for that commit holds no thread. Validation runs on the caller's loop, so keep
        large requests to `__call__` in a thread."""
        new_job = _prepare(request, self.settings, self.new_id)
        submitted = await group.submit(self.jobs, new_job)
        _announce([submitted], self.signal, self.metrics)
        return submitted


def _prepare(request: JobRequest, settings: Policies, new_id: Callable[[], JobId]) -> NewJob:
    return prepare(
        request,
        job_id=new_id(),
        limits=settings.limits,
        default_max_retries=settings.default_max_retries,
    )


def _announce(
    submitted: Sequence[Submitted], signal: JobSignal | None, metrics: JobMetrics
) -> None:
    created = [s.job for s in submitted if s.created]
    if created:
        metrics.jobs_enqueued(created)
        if signal is not None:
            signal.notify()
