"""The errors a caller of vesper can meet: every one is a noun under VesperError."""

from __future__ import annotations

from typing import Any


class VesperError(Exception):
    """Base of every error vesper raises on purpose."""


class InvalidRequest(VesperError):
    """A request (job, query, header) broke a rule: names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidCursor(VesperError):
    """A pagination cursor that this store did not hand out."""

    def __init__(self, cursor: str) -> None:
        super().__init__(f"cursor: not a cursor this server issued: {cursor[:40]!r}")
        self.field = "cursor"


class JobNotFound(VesperError):
    def __init__(self, job_id: Any) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class IllegalTransition(VesperError):
    """The job's status does not allow the action (e.g. cancelling a done job)."""

    def __init__(self, job_id: Any, status: Any, action: str) -> None:
        super().__init__(f"cannot {action} job {job_id}: it is {getattr(status, 'value', status)}")
        self.job_id = job_id
        self.status = status
        self.action = action


class UniqueKeyHeld(IllegalTransition):
    """A retry would make a second active job with one unique key in one queue: the job
    stays as it is. An IllegalTransition, so that whatever refuses a retry refuses this
    one too."""

    def __init__(self, job_id: Any, status: Any, key: str, held_by: Any, *, queue: str) -> None:
        # the queue is named: a key is held per queue, so the same key elsewhere is no cause
        VesperError.__init__(
            self,
            f"cannot retry job {job_id}: its unique key {key[:64]!r} is held in queue "
            f"{queue!r} by active job {held_by}",
        )
        self.job_id = job_id
        self.status = status
        self.action = "retry"
        self.key = key
        self.queue = queue
        self.held_by = held_by


class LeaseLost(VesperError):
    """The presented lease is not the job's current lease (fencing): nothing was recorded."""

    def __init__(self, job_id: Any) -> None:
        super().__init__(f"lease on job {job_id} is no longer held; the result was not recorded")
        self.job_id = job_id


class IdempotencyConflict(VesperError):
    """The idempotency key is bound to a job submitted with a different body."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"idempotency key {key[:64]!r} was already used with a different request body"
        )
        self.key = key


class StoreUnavailable(VesperError):
    """The store did not answer (connection refused or lost, timed out, locked, restarting).

    The one error a store raises for "try again later" (see the error contract in
    vesper.application.ports): the call may or may not have taken effect, and the same
    store object works again once the database is back. Its message names no host,
    user, password or path.
    """


SCHEMA_NOT_MIGRATED = "database schema is not migrated (run `vesper migrate`)"


class SchemaNotMigrated(StoreUnavailable):
    """The database answers but holds no vesper tables: `vesper migrate` was not run.

    A kind of StoreUnavailable so that whatever waits for the store waits for the
    migration too (the workers start without a restart once it is applied); its own
    message says what the operator has to do.
    """

    def __init__(self) -> None:
        super().__init__(SCHEMA_NOT_MIGRATED)


class NonRetryable(VesperError):
    """Raise it from a consumer to send the job straight to dlq, with no retry."""


class NoConsumer(VesperError):
    """A worker claimed a job whose type has no consumer in this process."""

    def __init__(self, job_type: str) -> None:
        super().__init__(f"no consumer is registered for job type {job_type!r} in this worker")
        self.job_type = job_type


class StoreLacksQueues(VesperError):
    """Named queues (a worker's queues, queue settings) on a store that has none."""

    def __init__(self) -> None:
        super().__init__(
            "this store does not support named queues (its capabilities.queues is False)"
        )


class InvalidSchedule(VesperError, ValueError):
    """A periodic schedule that cannot run: a bad cron expression, time zone or name."""


class ScheduleNotFound(VesperError):
    def __init__(self, name: str) -> None:
        super().__init__(f"schedule {name!r} not found")
        self.name = name


class SchedulesUnsupported(VesperError):
    """The store keeps no schedules (a third-party store without a schedule registry)."""

    def __init__(self) -> None:
        super().__init__(
            "this store keeps no periodic schedules: they still run, but cannot be "
            "listed, paused or deleted"
        )
