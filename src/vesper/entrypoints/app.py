"""`vesper.App`: register consumers, enqueue jobs, run the service."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload
from uuid import UUID

from dependency_injector import providers

from vesper.application.consumers import Consumer, ConsumerFunction, Consumers
from vesper.application.waiting import JobWaits
from vesper.domain.backoff import Backoff
from vesper.domain.job import JobId, JobRecord
from vesper.domain.retry import ExceptionTypes, RetryPolicy
from vesper.domain.submission import JobRequest, seconds
from vesper.entrypoints.container import Container, build_container
from vesper.entrypoints.logs import configure_logging
from vesper.entrypoints.service import run
from vesper.entrypoints.settings import Settings
from vesper.entrypoints.tracing import current_traceparent

F = TypeVar("F", bound=ConsumerFunction)


def _seconds(field: str, value: float | timedelta | None) -> timedelta | None:
    return value if isinstance(value, timedelta) else seconds(field, value)


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
        backoff. `timeout` (seconds) limits one attempt of this type.

        The retry policy of this type: `max_retries` for its jobs submitted through
        this app without one (a job's own wins), `backoff` between its retries,
        `retry_on` (only these exceptions retry, others go to dlq) and `discard_on`
        (these go to dlq at once).
        """
        if callable(job_type):
            self.consumers.add(None, Consumer(job_type))
            return job_type
        policy = RetryPolicy(
            max_retries=max_retries, backoff=backoff, retry_on=retry_on, discard_on=discard_on
        )

        def register(function: F) -> F:
            consumer = Consumer(function, timeout=_seconds("timeout", timeout), policy=policy)
            self.consumers.add(job_type, consumer)
            return function

        return register

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
        unique_key: str | None = None,
    ) -> JobRecord:
        """Submit one job and return it (the bound job on an idempotent replay; the
        active job holding `unique_key`, if one does)."""
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
            unique_key=unique_key,
        )
        return self.container.submit_job()(request).job

    def enqueue_many(self, requests: Iterable[JobRequest]) -> list[JobRecord]:
        """Submit a batch, all or nothing."""
        return [s.job for s in self.container.submit_jobs()(list(requests))]

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
