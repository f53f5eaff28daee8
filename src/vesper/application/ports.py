"""The ports: what the use cases need from the outside world.

The docstrings are the specification that `vesper.testing`'s contract suite checks.
Every time-dependent method takes `now`: None means the store's own clock (the database
clock for PostgreSQL), a datetime is used as is (tests never sleep).

Errors. A store raises only these (all in `vesper.domain.errors`), each with a message
that names no host, user, password or file path:

- StoreUnavailable: the database did not answer, or not in time (connection refused or
  lost, pool exhausted, locked for too long, shutting down). Nothing can be assumed
  about the call's effect; the caller waits and retries (`serve` and `worker` wait for it
  at start-up, the API answers 503 with Retry-After). The same store object must work
  again once the database is back: no reopening.
- SchemaNotMigrated, a kind of StoreUnavailable: the database answers but lacks the
  store's tables (`vesper migrate` was not run).
- IdempotencyConflict (submit): the key is bound to a job with another fingerprint.
- JobNotFound (get, cancel, retry): no job has the id.
- IllegalTransition (cancel, retry): the job's status does not allow the action;
  UniqueKeyHeld, a kind of it (retry): another active job of the job's queue holds its
  unique key.

Anything else a store raises (a driver's own exception, an integrity error, a
ValueError) is a bug in the store: the API answers 500 and logs it. A store maps its
driver's errors to these; no caller catches a driver's exception.

Text. Job types, payloads (JSON) and idempotency keys reach a store as valid Unicode: no
lone surrogates (the domain refuses them before a store sees them) and no NUL character
in a type or key. A store keeps every such string exactly, whitespace included: `k` and
`k ` are two keys, so a database that pads or folds strings when it compares them must
compare them as bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

import attrs

from vesper.domain.activity import Activity
from vesper.domain.bulk import BulkAction, BulkBatch, BulkFilter
from vesper.domain.fleet import WorkerProcess
from vesper.domain.job import Failure, JobId, JobRecord, LeaseRef, Snoozed
from vesper.domain.periodic import Schedule, ScheduleRecord
from vesper.domain.query import JobPage, JobQuery
from vesper.domain.queues import QueueChange, QueueSettings, QueueState
from vesper.domain.states import Status
from vesper.domain.stats import QueueStats, QueueSummary
from vesper.domain.submission import NewJob


@attrs.frozen(kw_only=True)
class Submitted:
    job: JobRecord
    # False: an idempotent replay returned the job the key is bound to, or an active job
    # of the same queue with the same unique_key was returned
    created: bool


@attrs.frozen(kw_only=True)
class Capabilities:
    """What a store can do beyond the JobRepository port, for the contract suite and the
    use cases: a flag a store leaves False is a guarantee it does not give, or a method
    it does not offer."""

    multi_process: bool = False  # several OS processes may share the store
    # the repository is a CompletingJobRepository too: RecordAndClaim calls it instead of
    # complete() and then claim()
    complete_and_claim: bool = False
    # the repository is a TransactionalJobRepository too: it writes jobs in a transaction
    # the caller holds open on a connection of its own (`app.enqueue(connection=...)`)
    transactional_submit: bool = False
    # the repository is an ActivityJobRepository too: the dashboard's per-minute chart
    activity: bool = False
    # the repository is a SummaryJobRepository too: the overview's counts, capped (without
    # it the overview counts everything through stats())
    summary: bool = False
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
        raised and nothing of this call is inserted. A key twice in `jobs` with other
        fingerprints is a conflict too, whatever became of its first job. Insertion
        order (`seq`) follows the sequence. `run_at` None means now + delay.

        A job with a `unique_key` (and no bound idempotency key) whose key an active job
        of the same queue holds (pending, failed or processing; of this call too, or of
        a concurrent one) is not inserted: that job is returned with `created=False`.
        Once that job has finished, the key is free again. A key is held per queue: a
        job of another queue holding it is neither returned nor in the way.
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
        self,
        leases: Sequence[LeaseRef],
        *,
        now: datetime | None = None,
        results: Mapping[JobId, str] | None = None,
    ) -> list[JobRecord]:
        """processing -> done for each lease still current; returns the jobs it changed.

        A lease that is stale (another claim, expired, released) changes nothing and is
        absent from the result (fencing). `results` holds the JSON text of the
        consumers' return values by job id (the caller encoded and bounded it): a
        completed job's `result` is that value decoded, None for a job absent from it.
        """
        ...

    def fail(self, failures: Sequence[Failure], *, now: datetime | None = None) -> list[JobRecord]:
        """Record failed attempts, fenced like complete: failed with retries + 1 and
        run_at = now + retry_delay while retries < max_retries, else dlq (also when
        retry_delay is None: not retryable). A job with a cancel request ends cancelled
        (finished now) instead, with the error recorded."""
        ...

    def renew(
        self, leases: Sequence[LeaseRef], *, lease: timedelta, now: datetime | None = None
    ) -> list[JobRecord]:
        """Extend each current lease to now + `lease`; stale ones are absent from the
        result. A job with a cancel request (`cancel_requested_at`) ends cancelled
        instead, finished now, its lease gone: it is in the result with that status,
        which is how its worker learns it must stop the consumer."""
        ...

    def release(
        self, leases: Sequence[LeaseRef], *, now: datetime | None = None
    ) -> list[JobRecord]:
        """processing -> pending for each current lease, refunding the attempt
        (graceful shutdown); stale ones are absent from the result. A job with a cancel
        request ends cancelled instead."""
        ...

    def expire(
        self, *, worker_ids: Sequence[str] = (), now: datetime | None = None
    ) -> list[JobRecord]:
        """End the leases that expired by `now`, and every lease held by `worker_ids`
        (processes found dead): each such job counts a failed attempt and becomes failed
        (claimable at once) or dlq when its retries are exhausted; cancelled (finished
        now) if it had a cancel request.

        A job that a concurrent fenced update is changing may be left to it (a later
        expire ends its lease if still due); a job expire changed is never changed back
        by a fenced update that started before."""
        ...

    def cancel(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        """pending/failed -> cancelled. A processing job gets a cancel request instead:
        `cancel_requested_at` = now (a second request keeps the first time), status
        unchanged. JobNotFound, or IllegalTransition otherwise."""
        ...

    def retry(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        """dlq/failed/cancelled -> pending, due now, retries reset, cancel request
        cleared; JobNotFound, or IllegalTransition otherwise. UniqueKeyHeld (an
        IllegalTransition) when another job of the same queue, active, holds the job's
        unique key: the job is left as it is (never two active jobs with one key in one
        queue; a holder in another queue does not stop the retry)."""
        ...

    def stats(self, *, now: datetime | None = None) -> QueueStats:
        """Counts by (status, priority) and the run_at of the oldest due job."""
        ...

    def get_many(self, job_ids: Sequence[JobId]) -> list[JobRecord]:
        """The jobs among `job_ids` that exist, in no particular order (unknown ids are
        left out): one read, however many ids (waiters look their jobs up together)."""
        ...

    def prune(
        self,
        older_than: Mapping[Status, timedelta],
        *,
        limit: int,
        now: datetime | None = None,
    ) -> dict[Status, int]:
        """Delete up to `limit` finished jobs whose status is in `older_than` and whose
        finished_at is at least that status's age before now; returns how many of each
        status it deleted (statuses with none may be absent).

        Pending, failed and processing jobs are never deleted (ValueError if
        `older_than` names such a status, or holds a negative age). A deleted job's
        idempotency key is free again. Takes no lock a claim or another prune waits
        for: any number of pruners may run at once, each deleting other jobs.
        """
        ...

    def delete(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        """Delete a finished (done, dlq, cancelled) job and return it as it was;
        JobNotFound, or IllegalTransition (action "delete") for any other status. Its
        idempotency key is free again."""
        ...

    def snooze(self, snoozes: Sequence[Snoozed], *, now: datetime | None = None) -> list[JobRecord]:
        """processing -> pending at now + delay for each current lease, refunding the
        attempt and counting a snooze (`snoozes` + 1; retries unchanged); a job with a
        cancel request ends cancelled instead. Fenced like complete."""
        ...

    def bulk(
        self,
        action: BulkAction,
        where: BulkFilter,
        *,
        limit: int,
        now: datetime | None = None,
    ) -> BulkBatch:
        """Apply `action` (JobRecord.retry or .cancel) to the first `limit` jobs, in
        insertion order, matching `where` (`BulkFilter.matches`), in one short
        transaction.

        A retry skips (leaves as they are) finished jobs whose unique key an active job
        of their queue holds, or an earlier job of the batch took (`bulk.take`); a holder
        in another queue skips nothing. Returns how many jobs changed, how many were
        skipped, and `last_seq`: the seq of the last of the `limit` jobs (None: none
        matched). Callers loop with `where.after_seq` =
        `last_seq` until it is None: no job is looked at twice.
        """
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
        results: Mapping[JobId, str] | None = None,
    ) -> tuple[list[JobRecord], list[JobRecord]]:
        """`complete(leases, results=results)` and then `claim(...)`, as one unit of
        work: all of it or none (a caller that retries after an error records nothing
        twice).

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
        now: datetime | None = None,
        results: Mapping[JobId, str] | None = None,
        queues: Sequence[str] | None = None,
    ) -> tuple[list[JobRecord], list[JobRecord]]:
        """CompletingJobRepository.complete_and_claim, its claim as QueueingJobRepository's."""


class TransactionalJobRepository(JobRepository, Protocol):
    """A JobRepository that writes jobs inside a transaction its caller holds open on a
    database connection of the caller's own: optional, declared by
    `capabilities.transactional_submit`. Which connections a store can join is its own
    business (the SQL stores: the README's list); `connection` is typed `object` here so
    that the use cases need no database library.
    """

    def is_async(self, connection: object) -> bool:
        """Whether `connection` is an asyncio one (use submit_in_async).

        Raises:
            TypeError: a connection this store cannot write in (its kind, or its
                database's, named).
        """
        ...

    def submit_in(self, connection: object, jobs: Sequence[NewJob]) -> list[Submitted]:
        """`submit(jobs)`, its statements run in the transaction open on `connection`
        (begun if none is): the jobs exist if and only if the caller commits it, and are
        invisible to every other transaction until then. Idempotency keys behave as in
        `submit`; a key that a concurrent, still open transaction is binding makes this
        wait until that transaction ends, and then see its job (a replay or
        IdempotencyConflict) or, if it rolled back, bind the key itself. Nothing is
        committed or rolled back here: an error leaves the caller's transaction to the
        caller.

        Errors: IdempotencyConflict, and TypeError for a connection it cannot join. The
        exception to the error contract above: the connection's own driver errors (a
        lock timeout, a lost connection, missing tables) reach the caller unchanged,
        since the connection and its transaction are the caller's to retry.
        """
        ...

    async def submit_in_async(self, connection: object, jobs: Sequence[NewJob]) -> list[Submitted]:
        """`submit_in` on an asyncio connection."""
        ...

    def after_commit(self, connection: object, callback: Callable[[], None]) -> None:
        """Call `callback` once, when the transaction open on `connection` commits (never
        when it rolls back), where that kind of connection lets the store hear it; other
        processes learn of the jobs as they learn of any submit."""


class ActivityJobRepository(JobRepository, Protocol):
    """A JobRepository that counts finished work by minute: optional, declared by
    `capabilities.activity` (the dashboard shows no chart without it)."""

    def activity(self, *, window: timedelta, now: datetime | None = None) -> Activity:
        """Per minute of the `window` ending at now (UTC minutes, oldest first, empty
        ones included): the jobs that finished done (by finished_at), and the failures
        (jobs now in dlq by finished_at, jobs now failed by their last failed attempt,
        updated_at). Counted over the whole store, whichever process did the work."""
        ...


class SummaryJobRepository(JobRepository, Protocol):
    """A JobRepository that counts jobs by status only up to a cap: optional, declared
    by `capabilities.summary` (the dashboard's overview then costs the same on a table of
    any size)."""

    def summary(self, *, cap: int, now: datetime | None = None) -> QueueSummary:
        """Each status's jobs, counted up to `cap` + 1 and no further (so cap + 1 means
        more than `cap`), and the run_at of the oldest due job as `stats` gives it.
        The point is a cost that grows with the cap, not with the table (a SQL store reads
        at most cap + 1 index entries per status). ValueError for a cap below 1.

        `active_by_queue` (optional: None where the store does not count it): each queue
        with active jobs or settings, its waiting jobs (pending, failed) and running ones
        (processing) each counted up to `cap` + 1, at a cost that the finished jobs do
        not change (a SQL store: cap + 1 entries of the per-queue claim index per queue,
        and the processing jobs)."""
        ...


class WorkerRegistry(Protocol):
    def register(self, process: WorkerProcess, *, now: datetime | None = None) -> WorkerProcess:
        """Add (or replace) a process; started_at and last_heartbeat are set to now."""
        ...

    def heartbeat(self, worker_id: str, *, now: datetime | None = None) -> bool:
        """Set last_heartbeat to now; True while the process is registered, also when
        now equals its last heartbeat (nothing changes then); False if it is not
        registered (it was reaped: the caller registers again)."""
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


class ScheduleRegistry(Protocol):
    """The periodic schedules the processes declare, and each one's state (optional: a
    store offers it as its attribute `schedules`; see `store_schedules`)."""

    def declare(self, schedules: Sequence[Schedule], *, now: datetime | None = None) -> None:
        """Insert or update each schedule by name, and set its last_declared_at to now.

        A schedule declared again keeps its state: paused, last_tick and last_job_id.
        """
        ...

    def record_tick(
        self, name: str, tick: datetime, job_id: JobId, *, now: datetime | None = None
    ) -> bool:
        """Record `tick` and its job as the schedule's last, if `tick` is later than the
        last one recorded (or none is); False when it is not, or the schedule is unknown.
        Two concurrent callers never move last_tick backwards."""
        ...

    def set_paused(self, name: str, paused: bool) -> ScheduleRecord:
        """Pause or resume the schedule; returns it. ScheduleNotFound if unknown."""
        ...

    def list(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""
        ...

    def delete(self, name: str) -> None:
        """Forget the schedule and its state. ScheduleNotFound if unknown."""
        ...


class Store(Protocol):
    """One storage backend: its job repository and worker registry, sharing a database.

    A storage adapter is a factory `open_store(url, clock, options) -> Store` (the
    StoreFactory protocol), registered under the entry-point group `vesper.storage`;
    `options` carries the operational settings (StoreOptions: pool size, overflow,
    auto-migration).

    A store may report its capacity, an optional attribute `capacity: int | None`: how
    many calls to it may run at once (a connection pool's size; None or absent: no
    bound). The process's store gate admits no more calls than that, so that an admitted
    call never waits for a connection (see `store_capacity`). Heartbeats and lease
    renewals do not pass that gate: a worker sends them on a lane of its own (two
    threads), so that a saturated gate never delays a renewal; a store with a pool
    keeps a few connections for them (the built-in PostgreSQL store: a second pool)
    or counts them into its capacity.

    Optional capabilities, each found by its attribute (absent: not offered):
    `pool_figures()` (PoolReporter: connection pools for the metrics), `notifier`
    (Notifier: wakes workers in other processes), `migrate()` (Migrator: `vesper
    migrate` runs it).

    A store may keep periodic schedules, an optional attribute `schedules:
    ScheduleRegistry` (see `store_schedules`). Without it the schedulers still submit
    one job per tick (the idempotency key does that), but nothing lists, pauses or
    deletes schedules, and a restart after downtime submits no catch-up tick.
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


def store_schedules(store: Store) -> ScheduleRegistry | None:
    """The store's schedule registry; None when it keeps none (a plugin may not)."""
    registry: ScheduleRegistry | None = getattr(store, "schedules", None)
    return registry


class JobSignal(Protocol):
    """Tells idle workers in this process that jobs may be waiting."""

    def notify(self) -> None: ...


# -- what a store factory gets, and the optional capabilities of a store --------------------


@attrs.frozen(kw_only=True)
class StoreOptions:
    """The operational settings a store factory gets, from the environment.

    A store uses what applies to it and ignores the rest (an in-memory store all of it).
    """

    pool_size: int = 10  # connections a pool keeps (VESPER_DB_POOL_SIZE)
    max_overflow: int = 5  # connections it opens beyond them on demand (VESPER_DB_MAX_OVERFLOW)
    # bring the schema to the newest version when the store opens (VESPER_AUTO_MIGRATE;
    # off by default in production, where `vesper migrate` does it)
    auto_migrate: bool = True


class StoreFactory(Protocol):
    """What a `vesper.storage` entry point names: `open_store(url, clock, options)`.

    `url` is VESPER_DATABASE_URL (or `<name>://` when unset); `clock` is the host's
    clock (a store with a database clock may ignore it). Opening should not need the
    database: a store that cannot reach it raises StoreUnavailable from its first call
    (or here), and vesper waits for it.
    """

    def __call__(self, url: str, clock: Clock, options: StoreOptions, /) -> Store: ...


@attrs.frozen(kw_only=True)
class PoolFigures:
    """One connection pool, at the moment it was read."""

    size: int  # the connections it keeps
    max_overflow: int  # the connections it may open beyond them
    in_use: int  # checked out
    idle: int  # open, waiting in the pool


class PoolReporter(Protocol):
    """Optional: a store with connection pools reports them (`vesper_db_pool_*`)."""

    def pool_figures(self) -> Mapping[str, PoolFigures]:
        """Each pool by name (the built-in stores: `main`, and `beat` for heartbeats)."""
        ...


class Subscription(Protocol):
    """A live subscription to a Notifier."""

    def connected(self) -> bool:
        """Whether notifications can arrive now (`vesper_listen_connected`)."""
        ...

    @property
    def reconnects(self) -> int:
        """How often the channel was lost and opened again (`vesper_listen_reconnects`)."""
        ...

    def close(self) -> None:
        """Stop delivering; returns promptly."""
        ...


class Notifier(Protocol):
    """Optional (a store's attribute `notifier`): "jobs may be waiting", across processes.

    A store publishes whenever it makes jobs due (a submission, a retry), once the
    change is visible to other processes (at commit, or in the committing transaction
    as PostgreSQL's NOTIFY); vesper subscribes once per process and wakes that
    process's idle workers. A notification is a hint: a lost one costs a poll interval,
    a spurious one a claim that finds nothing. Without a notifier workers poll
    (VESPER_POLL_INTERVAL).
    """

    def publish(self) -> None:
        """Tell every subscriber, in any process, that jobs may be waiting."""
        ...

    def subscribe(self, on_jobs: Callable[[], None]) -> Subscription:
        """Call `on_jobs` (from a thread of the notifier's) after each publish, and
        once whenever the channel is (re)established: what was published meanwhile
        may have been missed."""
        ...


class Migrator(Protocol):
    """Optional: a store that manages a schema creates or upgrades it here."""

    def migrate(self) -> str:
        """Bring the schema to the newest version (a no-op when it is there; safe when
        several processes run it at once); returns one line saying what it did.

        Raises:
            StoreUnavailable: the database did not answer.
        """
        ...


def store_pools(store: Store) -> Mapping[str, PoolFigures]:
    """The pools `store` reports; none when it reports none."""
    report: Callable[[], Mapping[str, PoolFigures]] | None = getattr(store, "pool_figures", None)
    return dict(report()) if report is not None else {}


def store_notifier(store: Store) -> Notifier | None:
    """The store's notifier, or None: its workers poll."""
    notifier: Notifier | None = getattr(store, "notifier", None)
    return notifier


def store_migrator(store: Store) -> Callable[[], str] | None:
    """The store's migration hook, or None: it has no schema to manage."""
    hook: Callable[[], str] | None = getattr(store, "migrate", None)
    return hook if callable(hook) else None
