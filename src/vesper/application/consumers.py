"""User consumers: which function runs which job type, and what a running job sees."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from vesper.domain.errors import LeaseLost
from vesper.domain.job import JobId, JobRecord
from vesper.domain.retry import RetryPolicy

ConsumerFunction = Callable[["Job"], Any] | Callable[["Job"], Awaitable[Any]]

# Guards the making of a job's stop event (on the first wait, from the consumer's thread)
# against its stop (from the worker's loop): one lock for all jobs, rarely taken.
_STOP_EVENTS = threading.Lock()


class Job:
    """The job as a consumer receives it (`vesper.Job`).

    A sync consumer that runs long should look at `stopping` now and then: it turns true
    when the worker lost the job's lease or its time limit passed, and any result will
    not be recorded. An async consumer is cancelled instead.
    """

    __slots__ = ("_record", "_stop", "_stop_reason", "_stopped", "payload")

    def __init__(self, record: JobRecord) -> None:
        self._record = record
        self.payload: dict[str, Any] = dict(record.payload)
        # made on the first wait_stopping: most jobs never wait, and making an Event
        # (a Condition, three caught AttributeErrors) was ~7% of a worker's CPU a job in
        # a drain of short jobs
        self._stop: threading.Event | None = None
        self._stopped = False
        self._stop_reason = ""

    @property
    def id(self) -> JobId:
        return self._record.id

    @property
    def type(self) -> str:
        return self._record.type

    @property
    def priority(self) -> int:
        return self._record.priority

    @property
    def attempt(self) -> int:
        """1 for the first attempt."""
        return self._record.attempts

    @property
    def retries(self) -> int:
        return self._record.retries

    @property
    def max_retries(self) -> int:
        return self._record.max_retries

    @property
    def created_at(self) -> datetime:
        return self._record.created_at

    @property
    def run_at(self) -> datetime:
        return self._record.run_at

    @property
    def record(self) -> JobRecord:
        """The stored job as it was claimed."""
        return self._record

    @property
    def stopping(self) -> bool:
        """True once the result of this attempt can no longer be recorded."""
        return self._stopped

    @property
    def stop_reason(self) -> str:
        return self._stop_reason

    def wait_stopping(self, timeout: float | None = None) -> bool:
        """Sleep up to `timeout` seconds, waking early when the job must stop."""
        event = self._stop
        if event is None:
            with _STOP_EVENTS:
                if self._stop is None:
                    self._stop = threading.Event()
                    if self._stopped:
                        self._stop.set()
                event = self._stop
        return event.wait(timeout)

    def raise_if_stopping(self) -> None:
        """Raise LeaseLost if the attempt can no longer be recorded."""
        if self._stopped:
            raise LeaseLost(self.id)

    def stop(self, reason: str) -> None:
        """Tell the consumer to stop (the worker calls this)."""
        with _STOP_EVENTS:
            if self._stopped:
                return
            self._stop_reason = reason
            self._stopped = True
            event = self._stop
        if event is not None:
            event.set()

    def __repr__(self) -> str:
        return f"vesper.Job(id={self.id}, type={self.type!r}, attempt={self.attempt})"


@attrs.frozen
class Consumer:
    function: ConsumerFunction
    timeout: timedelta | None = None
    queue: str | None = None  # where its type's jobs go when the producer names no queue
    policy: RetryPolicy = RetryPolicy()
    # asked for every job: inspect once
    is_async: bool = attrs.field(
        init=False,
        default=attrs.Factory(lambda self: inspect.iscoroutinefunction(self.function), True),
    )


@attrs.define
class Consumers:
    """Consumers by job type; one registered for None takes every other type."""

    _by_type: dict[str | None, Consumer] = attrs.field(factory=dict)

    def add(self, job_type: str | None, consumer: Consumer) -> None:
        if job_type in self._by_type:
            label = "the catch-all consumer" if job_type is None else f"job type {job_type!r}"
            raise ValueError(f"{label} already has a consumer")
        self._by_type[job_type] = consumer

    def queue_of(self, job_type: str) -> str | None:
        """The queue the consumer of `job_type` declares (not the catch-all's), if any."""
        consumer = self._by_type.get(job_type)
        return consumer.queue if consumer is not None else None

    def find(self, job_type: str) -> Consumer | None:
        return self._by_type.get(job_type) or self._by_type.get(None)

    def __bool__(self) -> bool:
        return bool(self._by_type)

    def max_retries(self, job_type: str) -> int | None:
        """The max_retries the consumer of `job_type` sets for jobs submitted without
        one (None: the service's default)."""
        consumer = self.find(job_type)
        return consumer.policy.max_retries if consumer is not None else None

    @property
    def types(self) -> Mapping[str | None, Consumer]:
        return dict(self._by_type)

    @property
    def claim_types(self) -> tuple[str, ...] | None:
        """The job types a worker with these consumers may claim: None (every type) when
        a catch-all consumer is registered. A job of another type is left to a process
        that has its consumer, instead of failing here for want of one."""
        if None in self._by_type:
            return None
        return tuple(sorted(t for t in self._by_type if t is not None))
