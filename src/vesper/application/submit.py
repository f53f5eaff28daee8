"""Submitting jobs: one, or a batch that is inserted whole or not at all.

Each use case is written once, as steps around its one store call (`steps`): prepare
the jobs, yield them, receive what the store made of them, announce the new ones, and
return. Calling the use case runs the steps in the calling thread with `jobs.submit`
as the store call; the HTTP API hands the same steps to the group commit's event-loop
front (application/group_commit.py), which runs them in the thread that commits them,
so that validating a large job never stalls the loop.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Sequence
from typing import TypeVar

import attrs

from vesper.application.metrics import NO_METRICS, JobMetrics
from vesper.application.policies import Policies
from vesper.application.ports import (
    JobRepository,
    JobSignal,
    Submitted,
    TransactionalJobRepository,
)
from vesper.domain.errors import InvalidRequest
from vesper.domain.job import JobId
from vesper.domain.submission import JobRequest, NewJob, prepare

T = TypeVar("T")

# The max_retries a job type's consumer sets for jobs submitted without one (None: the
# service's default); `Consumers.max_retries` in a process that registers consumers.
TypeDefaults = Callable[[str], "int | None"]

# A submission's steps: yields the prepared jobs once, is sent what the store returned
# for them (in order), and returns the use case's result.
SubmitSteps = Generator[list[NewJob], list[Submitted], T]


def new_job_id() -> JobId:
    return JobId(uuid.uuid4())


def no_routes(job_type: str) -> str | None:
    """No consumer known here: a job without a queue goes to "default"."""
    return None


def run_steps(steps: SubmitSteps[T], submit: Callable[[list[NewJob]], list[Submitted]]) -> T:
    """Run a submission's steps here, with `submit` as its store call."""
    jobs = next(steps)
    try:
        submitted = submit(jobs)
    except BaseException:
        steps.close()
        raise
    try:
        steps.send(submitted)
    except StopIteration as done:
        result: T = done.value
        return result
    raise RuntimeError("a submission's steps yield their jobs once")


@attrs.frozen
class SubmitJobs:
    """Validate and insert a batch, all or nothing.

    `bounded` (the HTTP API's use) refuses a batch of more than `Limits.max_batch` jobs, a
    bound on request bodies; the library's `app.enqueue_many` takes any number, in one
    transaction.

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
    # the queue of a type's consumer, for a request that names none (None: "default")
    routes: Callable[[str], str | None] = no_routes
    bounded: bool = True
    type_defaults: TypeDefaults | None = None

    def __call__(self, requests: Sequence[JobRequest]) -> list[Submitted]:
        return run_steps(self.steps(requests), self.jobs.submit)

    def steps(self, requests: Sequence[JobRequest]) -> SubmitSteps[list[Submitted]]:
        """The use case as steps around its store call (see the module's docstring)."""
        submitted = yield _prepare_batch(
            requests,
            self.settings,
            self.new_id,
            self.routes,
            self.type_defaults,
            bounded=self.bounded,
        )
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
    routes: Callable[[str], str | None] = no_routes  # as SubmitJobs'
    type_defaults: TypeDefaults | None = None

    def __call__(self, request: JobRequest) -> Submitted:
        return run_steps(self.steps(request), self.jobs.submit)

    def steps(self, request: JobRequest) -> SubmitSteps[Submitted]:
        """The use case as steps around its store call (see the module's docstring)."""
        submitted = yield [
            _prepare(request, self.settings, self.new_id, self.routes, self.type_defaults)
        ]
        _announce(submitted, self.signal, self.metrics)
        return submitted[0]


def _prepare_batch(
    requests: Sequence[JobRequest],
    settings: Policies,
    new_id: Callable[[], JobId],
    routes: Callable[[str], str | None],
    type_defaults: TypeDefaults | None,
    bounded: bool = True,
) -> list[NewJob]:
    """Validate a batch; an error names the field with the job's index."""
    limits = settings.limits
    if not requests:
        raise InvalidRequest("jobs", "must hold at least one job")
    if bounded and len(requests) > limits.max_batch:
        raise InvalidRequest("jobs", f"must hold at most {limits.max_batch} jobs")
    prepared: list[NewJob] = []
    for index, request in enumerate(requests):
        try:
            prepared.append(_prepare(request, settings, new_id, routes, type_defaults))
        except InvalidRequest as exc:
            raise InvalidRequest(f"jobs[{index}].{exc.field}", exc.message) from None
    return prepared


def _prepare(
    request: JobRequest,
    settings: Policies,
    new_id: Callable[[], JobId],
    routes: Callable[[str], str | None],
    type_defaults: TypeDefaults | None,
) -> NewJob:
    if request.queue is None and isinstance(request.type, str):
        routed = routes(request.type)
        if routed is not None:
            request = attrs.evolve(request, queue=routed)
    default = type_defaults(request.type) if type_defaults is not None else None
    return prepare(
        request,
        job_id=new_id(),
        limits=settings.limits,
        default_max_retries=settings.default_max_retries if default is None else default,
    )


def _announce(
    submitted: Sequence[Submitted], signal: JobSignal | None, metrics: JobMetrics
) -> None:
    created = [s.job for s in submitted if s.created]
    if created:
        metrics.jobs_enqueued(created)
        if signal is not None:
            signal.notify()


@attrs.frozen
class SubmitInTransaction:
    """Validate jobs as SubmitJob(s) does and write them in the caller's open transaction.

    The jobs exist if and only if the caller commits; what a standalone submit announces
    at once (metrics, this process's idle workers) is announced when the store hears the
    commit. Usage: `prepare` the requests, then call with the connection (or await
    `submit_async` when `is_async(connection)`).

    Raises:
        InvalidRequest: a request broke a rule (the field is named).
        IdempotencyConflict: a key is bound to a job with another body.
        TypeError: a connection the store cannot write in.
    """

    jobs: TransactionalJobRepository
    settings: Policies = Policies()
    new_id: Callable[[], JobId] = new_job_id
    signal: JobSignal | None = None
    metrics: JobMetrics = NO_METRICS
    routes: Callable[[str], str | None] = no_routes  # as SubmitJobs'
    type_defaults: TypeDefaults | None = None

    def prepare(self, requests: Sequence[JobRequest], *, batch: bool) -> list[NewJob]:
        """The validated jobs; `batch` False: one request, its errors name the bare field."""
        if batch:
            return _prepare_batch(
                requests,
                self.settings,
                self.new_id,
                self.routes,
                self.type_defaults,
                bounded=False,
            )
        (request,) = requests
        return [_prepare(request, self.settings, self.new_id, self.routes, self.type_defaults)]

    def is_async(self, connection: object) -> bool:
        return self.jobs.is_async(connection)

    def __call__(self, connection: object, jobs: Sequence[NewJob]) -> list[Submitted]:
        submitted = self.jobs.submit_in(connection, jobs)
        self._announce_at_commit(connection, submitted)
        return submitted

    async def submit_async(self, connection: object, jobs: Sequence[NewJob]) -> list[Submitted]:
        submitted = await self.jobs.submit_in_async(connection, jobs)
        self._announce_at_commit(connection, submitted)
        return submitted

    def _announce_at_commit(self, connection: object, submitted: list[Submitted]) -> None:
        if any(s.created for s in submitted):
            self.jobs.after_commit(
                connection, lambda: _announce(submitted, self.signal, self.metrics)
            )
