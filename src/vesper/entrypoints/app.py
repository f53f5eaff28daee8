"""`vesper.App`: register consumers, enqueue jobs, run the service."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, overload
from uuid import UUID

from dependency_injector import providers

from vesper.application.consumers import Consumer, ConsumerFunction, Consumers
from vesper.application.submit import no_routes
from vesper.application.waiting import JobWaits
from vesper.domain.backoff import Backoff
from vesper.domain.errors import InvalidSchedule
from vesper.domain.job import JobId, JobRecord
from vesper.domain.periodic import Schedule, check_name
from vesper.domain.queues import check_queue
from vesper.domain.retry import ExceptionTypes, RetryPolicy
from vesper.domain.submission import JobRequest, seconds
from vesper.entrypoints.container import Container, build_container
from vesper.entrypoints.logs import configure_logging
from vesper.entrypoints.service import run
from vesper.entrypoints.settings import Settings
from vesper.entrypoints.tracing import current_traceparent

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from sqlalchemy.orm import Session

F = TypeVar("F", bound=ConsumerFunction)

# the caller's connections `enqueue(..., connection=...)` writes in (annotations only:
# vesper loads neither library for an App that never passes one)
SyncConnection: TypeAlias = "Connection | Session | psycopg.Connection[Any]"
AsyncioConnection: TypeAlias = "AsyncConnection | AsyncSession | psycopg.AsyncConnection[Any]"


def _seconds(field: str, value: float | timedelta | None) -> timedelta | None:
    return value if isinstance(value, timedelta) else seconds(field, value)


async def _first(jobs: Awaitable[list[JobRecord]]) -> JobRecord:
    return (await jobs)[0]


class App:
    """A vesper application: its consumers and its connection to the store.

    Configuration comes from the environment (the README's variables) unless `env` or
    `settings` is given. Nothing is opened until first use.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        settings: Settings | None = None,
        container: Container | None = None,
    ) -> None:
        self.consumers = Consumers()
        self.schedules: list[Schedule] = []  # fired by this process's workers
        self._env = env
        self._settings = settings
        self._container = container

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env(self._env if self._env is not None else os.environ)
        return self._settings

    @property
    def container(self) -> Container:
        if self._container is None:
            self._container = build_container(self.settings)
        if self._container.queue_routes() is no_routes:
            # jobs submitted here without a queue go to their consumer's
            self._container.queue_routes.override(providers.Object(self.consumers.queue_of))
        if self._container.type_defaults() is None:
            # jobs submitted here without max_retries take their consumer's
            self._container.type_defaults.override(providers.Object(self.consumers.max_retries))
        return self._container

    @overload
    def consumer(self, job_type: F, /) -> F: ...

    @overload
    def consumer(
        self,
        job_type: str | None = None,
        /,
        *,
        timeout: float | timedelta | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        backoff: Backoff | None = None,
        retry_on: type[BaseException] | ExceptionTypes = (),
        discard_on: type[BaseException] | ExceptionTypes = (),
    ) -> Callable[[F], F]: ...

    def consumer(
        self,
        job_type: str | F | None = None,
        /,
        *,
        timeout: float | timedelta | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        backoff: Backoff | None = None,
        retry_on: type[BaseException] | ExceptionTypes = (),
        discard_on: type[BaseException] | ExceptionTypes = (),
    ) -> F | Callable[[F], F]:
        """Register a consumer for `job_type`; with no type it takes every other type.

        The function gets a `vesper.Job`; it may be `async def`. Raising fails the
        attempt (retried with backoff); raising `vesper.NonRetryable` sends the job
        straight to dlq, `vesper.Snooze(s)` runs it again in s seconds without counting
        the attempt, `vesper.RetryAfter(s)` retries it in s seconds instead of the
        backoff. `timeout` (seconds) limits one attempt of this type. `queue` is where
        jobs of this type go when their producer names none (App.enqueue, and the HTTP
        API of a process that runs this app); it does not limit which queues a worker
        claims them from (VESPER_QUEUES does).

        The retry policy of this type: `max_retries` for its jobs submitted through
        this app without one (a job's own wins), `backoff` between its retries,
        `retry_on` (only these exceptions retry, others go to dlq) and `discard_on`
        (these go to dlq at once).
        """
        if callable(job_type):
            self.consumers.add(None, Consumer(job_type))
            return job_type
        if queue is not None:
            check_queue(queue)
        if queue is not None and job_type is None:
            raise ValueError("the catch-all consumer takes no queue: name a job type")
        policy = RetryPolicy(
            max_retries=max_retries, backoff=backoff, retry_on=retry_on, discard_on=discard_on
        )

        def register(function: F) -> F:
            consumer = Consumer(
                function, timeout=_seconds("timeout", timeout), queue=queue, policy=policy
            )
            self.consumers.add(job_type, consumer)
            return function

        return register

    def periodic(
        self,
        cron: str,
        *,
        type: str | None = None,
        payload: Mapping[str, Any] | None = None,
        queue: str | None = None,
        priority: int = 0,
        name: str | None = None,
        timezone: str = "UTC",
    ) -> Callable[[F], F]:
        """Declare a periodic schedule: each tick of `cron` submits one job of `type`,
        exactly one across every process that declares it.

        `cron` has 5 fields (minute hour day month weekday) or 6 with a leading seconds
        field (`*/10 * * * * *`: every 10 seconds), read in `timezone` (an IANA name).
        `name` identifies the schedule in the store and in each tick's idempotency key;
        it defaults to the type. Given a `type`, the schedule is declared by this call;
        without one, decorate a consumer (above `@app.consumer("report")`) and it takes
        that consumer's type. Worker processes fire the schedules they declare.

        Raises:
            InvalidSchedule: a bad expression, time zone or name, or a name declared
                twice (one line naming it).
        """

        def declare(job_type: str) -> None:
            schedule = Schedule(
                name=check_name(name if name is not None else job_type),
                cron=cron,
                timezone=timezone,
                type=job_type,
                payload=dict(payload) if payload is not None else {},
                priority=priority,
                queue=queue,
            )
            schedule.parsed()  # the expression and the zone, checked now
            if any(s.name == schedule.name for s in self.schedules):
                raise InvalidSchedule(
                    f"periodic schedule {schedule.name!r} is declared twice (give each a name=)"
                )
            self.schedules.append(schedule)

        if type is not None:
            declare(type)

        def decorate(function: F) -> F:
            if type is None:
                declare(self._consumer_type(function, cron))
            return function

        return decorate

    def _consumer_type(self, function: ConsumerFunction, cron: str) -> str:
        """The job type `function` consumes, for a schedule that names none."""
        for job_type, consumer in self.consumers.types.items():
            if consumer.function is function and job_type is not None:
                return job_type
        raise InvalidSchedule(
            f"periodic {cron!r}: no type= given and {getattr(function, '__name__', function)!r} "
            'is not a consumer of one type (put @app.periodic above @app.consumer("type"))'
        )

    @overload
    def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        priority: int = 0,
        max_retries: int | None = None,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        idempotency_key: str | None = None,
        timeout: float | timedelta | None = None,
        queue: str | None = None,
        concurrency_key: str | None = None,
        unique_key: str | None = None,
        connection: SyncConnection | None = None,
    ) -> JobRecord: ...

    @overload
    def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        priority: int = 0,
        max_retries: int | None = None,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        idempotency_key: str | None = None,
        timeout: float | timedelta | None = None,
        queue: str | None = None,
        concurrency_key: str | None = None,
        unique_key: str | None = None,
        connection: AsyncioConnection,
    ) -> Awaitable[JobRecord]: ...

    def enqueue(
        self,
        job_type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        priority: int = 0,
        max_retries: int | None = None,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        idempotency_key: str | None = None,
        timeout: float | timedelta | None = None,
        queue: str | None = None,
        concurrency_key: str | None = None,
        unique_key: str | None = None,
        connection: SyncConnection | AsyncioConnection | None = None,
    ) -> JobRecord | Awaitable[JobRecord]:
        """Submit one job and return it (the bound job on an idempotent replay; the
        active job of the same queue holding `unique_key`, if one does).

        With `connection` (a SQLAlchemy Connection or Session, or a psycopg connection,
        to the store's database), the job is written in the transaction open on it and
        exists only if the caller commits; with an asyncio one (AsyncConnection,
        AsyncSession, psycopg.AsyncConnection) the result is awaited.

        Without `queue` the job goes to its type's consumer's queue, else "default".
        `concurrency_key` groups jobs for the queue's key_concurrency (a tenant id).
        """
        request = JobRequest(
            type=job_type,
            # as given: the domain copies it, and refuses anything but a mapping (dict()
            # would turn a list of pairs into one)
            payload=payload if payload is not None else {},
            priority=priority,
            max_retries=max_retries,
            run_at=run_at,
            delay=_seconds("delay", delay),
            idempotency_key=idempotency_key,
            timeout=_seconds("timeout", timeout),
            trace_context=current_traceparent(),  # the producer's trace continues in the worker
            queue=queue,
            concurrency_key=concurrency_key,
            unique_key=unique_key,
        )
        if connection is None:
            return self.container.submit_job()(request).job
        written = self._submit_in(connection, [request], batch=False)
        if isinstance(written, list):
            return written[0]
        return _first(written)

    @overload
    def enqueue_many(
        self, requests: Iterable[JobRequest], *, connection: SyncConnection | None = None
    ) -> list[JobRecord]: ...

    @overload
    def enqueue_many(
        self, requests: Iterable[JobRequest], *, connection: AsyncioConnection
    ) -> Awaitable[list[JobRecord]]: ...

    def enqueue_many(
        self,
        requests: Iterable[JobRequest],
        *,
        connection: SyncConnection | AsyncioConnection | None = None,
    ) -> list[JobRecord] | Awaitable[list[JobRecord]]:
        """Submit a batch, all or nothing; `connection` as for `enqueue`.

        Any number of jobs, in one transaction (the HTTP API's `Limits.max_batch` bounds
        request bodies, not this call).
        """
        if connection is None:
            return [s.job for s in self.container.submit_jobs(bounded=False)(list(requests))]
        return self._submit_in(connection, list(requests), batch=True)

    def _submit_in(
        self, connection: object, requests: list[JobRequest], *, batch: bool
    ) -> list[JobRecord] | Awaitable[list[JobRecord]]:
        """Validate now (an error is raised here, not at an await), then write on the
        caller's connection."""
        submit = self.container.submit_in_transaction()
        jobs = submit.prepare(requests, batch=batch)
        if not submit.is_async(connection):
            return [s.job for s in submit(connection, jobs)]

        async def written() -> list[JobRecord]:
            return [s.job for s in await submit.submit_async(connection, jobs)]

        return written()

    def wait(self, job_id: JobId | str, timeout: float = 30) -> JobRecord:
        """The job once it is done, dlq or cancelled.

        Raises:
            TimeoutError: it had not finished after `timeout` seconds.
            JobNotFound: there is no such job (or it was deleted meanwhile).
        """
        waits: JobWaits = self.container.shared_job_waits()
        job, finished = waits.wait_blocking(JobId(UUID(str(job_id))), timeout)
        if not finished:
            raise TimeoutError(
                f"job {job.id} did not finish within {timeout:g}s (it is {job.status.value})"
            )
        return job

    def run(self, *, api: bool = True, workers: bool = True) -> None:
        """Run the HTTP API and the workers (as `vesper serve`) until SIGTERM or SIGINT."""
        configure_logging(self.settings)
        run(self, api=api, workers=workers)

    def close(self) -> None:
        """Close the store's connections."""
        if self._container is not None:
            self._container.shutdown_resources()
