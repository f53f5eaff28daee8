"""`vesper.App`: register consumers, enqueue jobs, run the service."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

from vesper.application.consumers import Consumer, ConsumerFunction, Consumers
from vesper.domain.job import JobRecord
from vesper.domain.queues import check_queue
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
            # jobs submitted here without a queue go to their consumer's
            self._container.queue_routes.override(self.consumers.queue_of)
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
    ) -> Callable[[F], F]: ...

    def consumer(
        self,
        job_type: str | F | None = None,
        /,
        *,
        timeout: float | timedelta | None = None,
        queue: str | None = None,
    ) -> F | Callable[[F], F]:
        """Register a consumer for `job_type`; with no type it takes every other type.

        The function gets a `vesper.Job`; it may be `async def`. Raising fails the
        attempt (retried with backoff); raising `vesper.NonRetryable` sends the job
        straight to dlq. `timeout` (seconds) limits one attempt of this type. `queue`
        is where jobs of this type go when their producer names none (App.enqueue, and
        the HTTP API of a process that runs this app); it does not limit which queues
        a worker claims them from (VESPER_QUEUES does).
        """
        if callable(job_type):
            self.consumers.add(None, Consumer(job_type))
            return job_type
        if queue is not None:
            check_queue(queue)
        if queue is not None and job_type is None:
            raise ValueError("the catch-all consumer takes no queue: name a job type")

        def register(function: F) -> F:
            consumer = Consumer(function, timeout=_seconds("timeout", timeout), queue=queue)
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
        queue: str | None = None,
        concurrency_key: str | None = None,
    ) -> JobRecord:
        """Submit one job and return it (the bound job on an idempotent replay).

        Without `queue` the job goes to its type's consumer's queue, else "default".
        `concurrency_key` groups jobs for the queue's key_concurrency (a tenant id)."""
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
        )
        return self.container.submit_job()(request).job

    def enqueue_many(self, requests: Iterable[JobRequest]) -> list[JobRecord]:
        """Submit a batch, all or nothing."""
        return [s.job for s in self.container.submit_jobs()(list(requests))]

    def run(self, *, api: bool = True, workers: bool = True) -> None:
        """Run the HTTP API and the workers (as `vesper serve`) until SIGTERM or SIGINT."""
        configure_logging(self.settings)
        run(self, api=api, workers=workers)

    def close(self) -> None:
        """Close the store's connections."""
        if self._container is not None:
            self._container.shutdown_resources()
