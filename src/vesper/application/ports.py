"""The ports: what the use cases need from the outside world.

The docstrings are the specification that `vesper.testing`'s contract suite checks.
Every time-dependent method takes `now`: None means the store's own clock (the database
clock for PostgreSQL), a datetime is used as is (tests never sleep).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

import attrs

from vesper.domain.fleet import WorkerProcess
from vesper.domain.job import Failure, JobId, JobRecord, LeaseRef
from vesper.domain.query import JobPage, JobQuery
from vesper.domain.queues import QueueChange, QueueSettings, QueueState
from vesper.domain.stats import QueueStats
from vesper.domain.submission import NewJob


@attrs.frozen(kw_only=True)
class Submitted:
    job: JobRecord
    created: bool  # False: an idempotent replay returned the job the key is bound to


@attrs.frozen(kw_only=True)
class Capabilities:
    """What a store can do beyond the JobRepository port, for the contract suite and the
    use cases: a flag a store leaves False is a guarantee it does not give, or a method
    it does not offer."""

    multi_process: bool = False  # several OS processes may share the store
    # the repository is a CompletingJobRepository too: RecordAndClaim calls it instead of
    # complete() and then claim()
    complete_and_claim: bool = False
    # the repository is a QueueingJobRepository too: claims take `queues=` and keep each
    # queue's settings (pause, limits, aging); without it every job is in "default"
    # and a worker that names queues refuses to start
    queues: bool = False


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, aware UTC."""
        ...


class JobRepository(Protocol):
    """The jobs of a store.

    Lease tokens and results: a claim's token is new; a store may give each claimed job
    its own or share one among the jobs of that claim, since a lease is named by the
    job id and the token together. The fenced updates (complete, fail, renew, release)
    and expire return the jobs they changed in no particular order; claim and find
    return theirs in the order they document.
    """

    capabilities: Capabilities

    def now(self) -> datetime:
        """The store's clock (aware UTC)."""
        ...

    def submit(self, jobs: Sequence[NewJob], *, now: datetime | None = None) -> list[Submitted]:
        """Insert `jobs` atomically: all of them or none, in order.

        A job whose idempotency key is already bound (by an earlier call, or by a
        concurrent one) is not inserted: with the same fingerprint the bound job is
        returned with `created=False`; with another fingerprint IdempotencyConflict is
        raised and nothing of this call is inserted. Insertion order (`seq`) follows the
        sequence. `run_at` None means now + delay.
        """
        ...

    def get(self, job_id: JobId) -> JobRecord:
        """The job; JobNotFound if there is none."""
        ...

    def find(self, query: JobQuery) -> JobPage:
        """Jobs matching every filter, newest first (by insertion), at most query.limit;
        next_cursor continues after the last one."""
        ...

    def claim(
        self,
        *,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> list[JobRecord]:
        """Atomically lease up to `limit` due jobs (pending/failed, run_at <= now), of
        `types` if given, in claim order: priority desc, run_at asc, insertion order.

        Each claimed job is processing, its attempts counted, with a lease held by
        `worker_id` until now + `lease` under a token no earlier claim used (one per job,
        or one shared by this call's jobs). No job is handed to two concurrent callers.
        The result is in claim order.
        """
        ...

    def complete(
        self, leases: Sequence[LeaseRef], *, now: datetime | None = None
    ) -> list[JobRecord]:
        """processing -> done for each lease still current; returns the jobs it changed.

        A lease that is stale (another claim, expired, released) changes nothing and is
        absent from the result (fencing).
        """
        ...

    def fail(self, failures: Sequence[Failure], *, now: datetime | None = None) -> list[JobRecord]:
        """Record failed attempts, fenced like complete: failed with retries + 1 and
        run_at = now + retry_delay while retries < max_retries, else dlq (also when
        retry_delay is None: not retryable)."""
        ...

    def renew(
        self, leases: Sequence[LeaseRef], *, lease: timedelta, now: datetime | None = None
    ) -> list[JobRecord]:
        """Extend each current lease to now + `lease`; stale ones are absent from the
        result."""
        ...

    def release(
        self, leases: Sequence[LeaseRef], *, now: datetime | None = None
    ) -> list[JobRecord]:
        """processing -> pending for each current lease, refunding the attempt
        (graceful shutdown); stale ones are absent from the result."""
        ...

    def expire(
        self, *, worker_ids: Sequence[str] = (), now: datetime | None = None
    ) -> list[JobRecord]:
        """End the leases that expired by `now`, and every lease held by `worker_ids`
        (processes found dead): each such job counts a failed attempt and becomes failed
        (claimable at once) or dlq when its retries are exhausted."""
        ...

    def cancel(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        """pending/failed -> cancelled; JobNotFound, or IllegalTransition otherwise."""
        ...

    def retry(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        """dlq/failed/cancelled -> pending, due now, retries reset; JobNotFound, or
        IllegalTransition otherwise."""
        ...

    def stats(self, *, now: datetime | None = None) -> QueueStats:
        """Counts by (status, priority) and the run_at of the oldest due job."""
        ...


class CompletingJobRepository(JobRepository, Protocol):
    """A JobRepository that records a worker's finished batch and claims the next one in
    one call: optional, declared by `capabilities.complete_and_claim`."""

    def complete_and_claim(
        self,
        leases: Sequence[LeaseRef],
        *,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> tuple[list[JobRecord], list[JobRecord]]:
        """`complete(leases)` and then `claim(...)`, as one unit of work: all of it or
        none (a caller that retries after an error records nothing twice).

        Returns:
            (completed, claimed), each as the two calls would return it: fencing and
            result orders are theirs. A job completed here is never among the claimed.
        """
        ...


class QueueingJobRepository(JobRepository, Protocol):
    """A JobRepository that knows named queues and keeps their settings: optional,
    declared by `capabilities.queues`. A store that declares `complete_and_claim` too
    takes `queues=` there as in `claim` (QueueingCompletingJobRepository)."""

    def claim(
        self,
        *,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None = None,
        queues: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> list[JobRecord]:
        """JobRepository.claim, of the jobs of `queues` only if given (None: every
        queue), keeping each queue's settings inside the claim, atomically against
        every other claimer in any process.

        Nothing is claimed from a paused queue; a queue never has more processing jobs
        than its `concurrency`, nor a `concurrency_key` more than the queue's
        `key_concurrency`; no window of a rate's period holds more claims than its count
        (a sliding window); with `aging`, jobs are taken by effective priority (see
        `vesper.domain.queues.effective_priority`), then run_at and insertion order.
        Claim order holds within a queue; a claim over several queues may take from
        them in any order.
        """
        ...

    def queue_settings(self) -> list[QueueSettings]:
        """The settings stored for each configured queue, by name."""
        ...

    def configure_queue(
        self, name: str, change: QueueChange, *, now: datetime | None = None
    ) -> QueueSettings:
        """Apply `change` to the queue's settings (a queue with no jobs may be
        configured) and return them; every later claim, in any process, applies them.

        Raises:
            InvalidRequest: a bad value (the field is named).
        """
        ...

    def queue_states(self, *, now: datetime | None = None) -> list[QueueState]:
        """Every queue that holds jobs or settings, by name: counts by status, the
        run_at of its oldest due job, the types of its due jobs, its settings."""
        ...


class QueueingCompletingJobRepository(QueueingJobRepository, CompletingJobRepository, Protocol):
    """A store with both capabilities: complete_and_claim takes `queues=` too."""

    def complete_and_claim(
        self,
        leases: Sequence[LeaseRef],
        *,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None = None,
        queues: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> tuple[list[JobRecord], list[JobRecord]]:
        """CompletingJobRepository.complete_and_claim, its claim as QueueingJobRepository's."""
        ...


class WorkerRegistry(Protocol):
    def register(self, process: WorkerProcess, *, now: datetime | None = None) -> WorkerProcess:
        """Add (or replace) a process; started_at and last_heartbeat are set to now."""
        ...

    def heartbeat(self, worker_id: str, *, now: datetime | None = None) -> bool:
        """Set last_heartbeat to now; False if the process is not registered (it was
        reaped: the caller registers again)."""
        ...

    def deregister(self, worker_id: str) -> None:
        """Remove the process; unknown ids are ignored."""
        ...

    def processes(self) -> list[WorkerProcess]:
        """Every registered process."""
        ...

    def reap(self, *, dead_after: timedelta, now: datetime | None = None) -> list[str]:
        """Remove the processes whose last heartbeat is older than now - dead_after;
        return their ids. Two concurrent reapers never both return the same id."""
        ...


class Store(Protocol):
    """One storage backend: its job repository and worker registry, sharing a database.

    A storage adapter is a factory `open(url: str, clock: Clock) -> Store`, registered
    under the entry-point group `vesper.storage`.

    A store may report its capacity, an optional attribute `capacity: int | None`: how
    many calls to it may run at once (a connection pool's size; None or absent: no
    bound). The process's store gate admits no more calls than that, so that an admitted
    call never waits for a connection (see `store_capacity`).
    """

    @property
    def jobs(self) -> JobRepository: ...

    @property
    def workers(self) -> WorkerRegistry: ...

    def close(self) -> None:
        """Release connections and files; the store is unusable afterwards."""
        ...


def store_capacity(store: Store) -> int | None:
    """How many calls `store` can serve at once, as it reports it; None: no bound.

    Raises:
        ValueError: a capacity that is not a positive integer.
    """
    capacity = getattr(store, "capacity", None)  # optional: a plugin may not report one
    if capacity is not None and (not isinstance(capacity, int) or capacity < 1):
        raise ValueError(f"a store's capacity must be a positive integer or None: {capacity!r}")
    return capacity


class JobSignal(Protocol):
    """Tells idle workers in this process that jobs may be waiting."""

    def notify(self) -> None: ...
