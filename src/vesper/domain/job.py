"""The job record (`JobRecord`, what a store holds; the consumer sees `vesper.Job`) and
its transitions: each returns a new record or raises."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple, NewType
from uuid import UUID

import attrs

from vesper.domain.errors import IllegalTransition, LeaseLost
from vesper.domain.queues import DEFAULT_QUEUE
from vesper.domain.states import CLAIMABLE, Status, allowed

JobId = NewType("JobId", UUID)

LEASE_EXPIRED_ERROR = "lease expired: the worker stopped renewing it (crash, kill or pause)"


class UniqueSlot(NamedTuple):
    """What an active job with a unique key holds: the key within its queue.

    At most one active (pending, failed, processing) job holds a slot. The same key in
    two queues is two slots: a submission returns the active job of its own queue
    holding its key, and a job in another queue does not stand in for it.
    """

    queue: str
    key: str


def unique_slot(queue: str, key: str | None) -> UniqueSlot | None:
    """The slot a job of `queue` with unique key `key` holds while active (None: no key)."""
    return None if key is None else UniqueSlot(queue, key)


@attrs.frozen(kw_only=True)
class Lease:
    """The right of one worker to finish one claim of a job, until `expires_at`."""

    worker_id: str
    token: UUID  # the fencing token: new at every claim
    expires_at: datetime


@attrs.frozen(kw_only=True)
class LeaseRef:
    """What a worker presents to act on a job it claimed."""

    job_id: JobId
    token: UUID


@attrs.frozen(kw_only=True)
class Failure:
    """A failed attempt as the worker reports it.

    `retry_delay` is the backoff before the next attempt; None means the error is not
    retryable and the job goes straight to dlq.
    """

    lease: LeaseRef
    error: str
    retry_delay: timedelta | None


@attrs.frozen(kw_only=True)
class Snoozed:
    """A snoozed attempt as the worker reports it: the job waits `delay` and runs again,
    the attempt not counted (`vesper.Snooze`)."""

    lease: LeaseRef
    delay: timedelta


@attrs.frozen(kw_only=True)
class JobRecord:
    id: JobId
    type: str
    queue: str = DEFAULT_QUEUE  # claimed only by workers serving it; limits apply per queue
    priority: int = 0  # 0-10, higher first
    payload: Mapping[str, Any] = attrs.field(factory=dict)
    status: Status = Status.PENDING
    retries: int = 0  # failed attempts that scheduled a retry; never above max_retries
    attempts: int = 0  # claims so far; refunded by a graceful release
    max_retries: int = 3
    error: str = ""
    run_at: datetime  # aware UTC; not claimable before
    idempotency_key: str | None = None
    concurrency_key: str | None = None  # key_concurrency counts processing jobs per key
    fingerprint: str = ""  # hash of the submitted request, for idempotent replays
    timeout: timedelta | None = None  # per-job time limit for one attempt
    trace_context: str | None = None  # W3C traceparent of the submitting request
    lease: Lease | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seq: int = 0  # insertion order, assigned by the store; breaks ordering ties
    result: Any = None  # the consumer's return value (decoded JSON); None: none
    # set on a processing job by a cancel: the job ends cancelled at its worker's next
    # renewal (or whatever ends the attempt first, but a success)
    cancel_requested_at: datetime | None = None
    snoozes: int = 0  # times a consumer raised vesper.Snooze
    # while this job is pending, failed or processing, a submission to its queue with the
    # same key returns it instead of inserting a new job
    unique_key: str | None = None

    @property
    def unique_slot(self) -> UniqueSlot | None:
        """The (queue, unique key) this job holds while active."""
        return unique_slot(self.queue, self.unique_key)

    @property
    def worker_id(self) -> str | None:
        return self.lease.worker_id if self.lease else None

    @property
    def lease_expires_at(self) -> datetime | None:
        return self.lease.expires_at if self.lease else None

    def is_due(self, now: datetime) -> bool:
        return self.status in CLAIMABLE and self.run_at <= now

    def holds(self, ref: LeaseRef, now: datetime) -> bool:
        """Whether `ref` is the current, unexpired lease of this job (the fencing check)."""
        return (
            self.status is Status.PROCESSING
            and self.lease is not None
            and ref.job_id == self.id
            and self.lease.token == ref.token
            and self.lease.expires_at > now
        )

    def claim(self, *, worker_id: str, token: UUID, now: datetime, lease: timedelta) -> JobRecord:
        """pending/failed -> processing, counting an attempt."""
        self._check("claim")
        if self.run_at > now:
            raise IllegalTransition(self.id, self.status, "claim (not due before run_at)")
        return attrs.evolve(
            self,
            status=Status.PROCESSING,
            attempts=self.attempts + 1,
            lease=Lease(worker_id=worker_id, token=token, expires_at=now + lease),
            started_at=now,
            updated_at=now,
        )

    def complete(self, ref: LeaseRef, *, now: datetime, result: Any = None) -> JobRecord:
        """processing -> done, for the holder of the current lease only, keeping the
        consumer's `result` (None: it returned none)."""
        self._fence(ref, now)
        return attrs.evolve(
            self, status=Status.DONE, lease=None, updated_at=now, finished_at=now, result=result
        )

    def fail(self, failure: Failure, *, now: datetime) -> JobRecord:
        """processing -> failed (retry at now + delay), or dlq once retries are exhausted."""
        self._fence(failure.lease, now)
        failed = self._failed(error=failure.error, retry_delay=failure.retry_delay, now=now)
        return failed._cancelled(now) if self.cancel_requested_at is not None else failed

    def renew(self, ref: LeaseRef, *, now: datetime, lease: timedelta) -> JobRecord:
        """Extend the current lease to now + lease; a job with a cancel request ends
        cancelled instead (its worker learns it from the result)."""
        self._fence(ref, now)
        assert self.lease is not None
        if self.cancel_requested_at is not None:
            return self._cancelled(now)
        return attrs.evolve(
            self, lease=attrs.evolve(self.lease, expires_at=now + lease), updated_at=now
        )

    def release(self, ref: LeaseRef, *, now: datetime) -> JobRecord:
        """processing -> pending, refunding the attempt (graceful shutdown)."""
        self._fence(ref, now)
        released = attrs.evolve(
            self,
            status=Status.PENDING,
            attempts=max(self.attempts - 1, 0),
            lease=None,
            started_at=None,
            updated_at=now,
        )
        return released._cancelled(now) if self.cancel_requested_at is not None else released

    def snooze(self, snoozed: Snoozed, *, now: datetime) -> JobRecord:
        """processing -> pending at now + delay, refunding the attempt and counting a
        snooze (retries unchanged); cancelled instead if a cancel was requested."""
        self._fence(snoozed.lease, now)
        later = attrs.evolve(
            self,
            status=Status.PENDING,
            attempts=max(self.attempts - 1, 0),
            snoozes=self.snoozes + 1,
            run_at=now + snoozed.delay,
            lease=None,
            started_at=None,
            updated_at=now,
        )
        return later._cancelled(now) if self.cancel_requested_at is not None else later

    def expire(self, *, now: datetime, error: str = LEASE_EXPIRED_ERROR) -> JobRecord:
        """processing -> failed (claimable at once) or dlq: the holder is gone.

        Counts as a failed attempt. Called for a lease past its expiry, and for the
        jobs of a worker process found dead (whatever their expiry). The job keeps its
        run_at, so its place in the queue: it was due when claimed, and re-queueing it
        at now would put it behind a backlog and past the recovery bound.
        """
        self._check("expire")
        failed = attrs.evolve(
            self._failed(error=error, retry_delay=timedelta(0), now=now), run_at=self.run_at
        )
        return failed._cancelled(now) if self.cancel_requested_at is not None else failed

    def cancel(self, *, now: datetime) -> JobRecord:
        """pending/failed -> cancelled; a processing job keeps running with a cancel
        request (the first one's time), which its worker acts on at its next renewal."""
        if self.status is Status.PROCESSING:
            if self.cancel_requested_at is not None:
                return self
            return attrs.evolve(self, cancel_requested_at=now, updated_at=now)
        self._check("cancel")
        return self._cancelled(now)

    def retry(self, *, now: datetime) -> JobRecord:
        """dlq/failed/cancelled -> pending, due now, with a fresh set of retries."""
        self._check("retry")
        return attrs.evolve(
            self,
            status=Status.PENDING,
            retries=0,
            run_at=now,
            updated_at=now,
            started_at=None,
            finished_at=None,
            cancel_requested_at=None,
        )

    def _failed(self, *, error: str, retry_delay: timedelta | None, now: datetime) -> JobRecord:
        if retry_delay is not None and self.retries < self.max_retries:
            return attrs.evolve(
                self,
                status=Status.FAILED,
                retries=self.retries + 1,
                run_at=now + retry_delay,
                error=error,
                lease=None,
                updated_at=now,
            )
        return attrs.evolve(
            self, status=Status.DLQ, error=error, lease=None, updated_at=now, finished_at=now
        )

    def _cancelled(self, now: datetime) -> JobRecord:
        return attrs.evolve(
            self, status=Status.CANCELLED, lease=None, updated_at=now, finished_at=now
        )

    def _check(self, action: str) -> None:
        if not allowed(action, self.status):
            raise IllegalTransition(self.id, self.status, action)

    def _fence(self, ref: LeaseRef, now: datetime) -> None:
        if not self.holds(ref, now):
            raise LeaseLost(self.id)
