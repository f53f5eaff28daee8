"""Named queues in SQL, for both job repositories: settings, the view of each queue, and
the claim from a queue whose settings limit it.

A claim has two paths. The fast one is the repository's own single statement, which
leaves out every limited queue (a live subquery on `vesper_queues`: a queue limited a
moment ago is never claimed from without its limits). The limited path takes one
queue at a time, in one transaction that first locks the queue's row (PostgreSQL:
FOR UPDATE; SQLite: the write lock), then counts the queue's processing jobs, checks
the rate's window, picks the jobs in effective priority order and per key, and
records the claims in the window. Claimers of that queue therefore queue up on its row,
and no limit can be exceeded by a race; a queue without limits never pays for them.

Which queues are limited is cached for `LIMITED_TTL` seconds per process: a stale entry
costs a queue at most that much delay (the fast path already excludes it), never a
limit. A repository may claim from a *capped* queue (limited by `paused` and
`concurrency` only) its own faster way (`capped`: PostgreSQL's one-call function); it
reports a queue whose settings turned out to be otherwise, which is then claimed from
here.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import attrs
from sqlalchemy import BindParameter, Uuid, bindparam, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from vesper.adapters.sqlcore.common import Database
from vesper.adapters.sqlcore.rows import (
    aware_utc,
    jobs_of,
    queue_row,
    queue_settings_of,
    rate_log_of,
    rate_log_text,
)
from vesper.adapters.sqlcore.tables import (
    CLAIMABLE_SQL,
    LIMITED_SQL,
    PROCESSING_SQL,
    jobs,
    queues,
    utc_datetime,
)
from vesper.domain.job import JobId, JobRecord, LeaseRef
from vesper.domain.queues import (
    QueueChange,
    QueueSettings,
    QueueState,
    check_queue,
    effective_priority,
    pick_by_key,
    queue_allowance,
    rate_log_after,
)
from vesper.domain.states import Status

log = logging.getLogger("vesper.store")

LIMITED_TTL = 0.25  # seconds a process trusts its list of limited queues
# PostgreSQL: the longest wait for a queue's row, then that queue is skipped this claim
QUEUE_LOCK_WAIT_MS = 500
_LOCK_WAIT = text(f"SET LOCAL lock_timeout = '{QUEUE_LOCK_WAIT_MS}ms'")
_WAIT_AS_BEFORE = text("SET LOCAL lock_timeout TO DEFAULT")
_LOCK_NOT_AVAILABLE = "55P03"
_BUSY = object()  # _lock_row: the row stayed locked past QUEUE_LOCK_WAIT_MS

# the fast path's exclusion of limited queues, for every store's claim statement
NOT_LIMITED_SQL = f"queue NOT IN (SELECT name FROM vesper_queues WHERE {LIMITED_SQL})"

# each limited queue, and whether it is capped (paused and concurrency its only limits)
_LIMITED = text(
    "SELECT name, rate_limit IS NULL AND key_concurrency IS NULL AND aging IS NULL "
    f"FROM vesper_queues WHERE {LIMITED_SQL}"
)
_RUNNING = text(
    f"SELECT concurrency_key, count(*) FROM vesper_jobs WHERE {PROCESSING_SQL} "
    "AND queue = :queue GROUP BY concurrency_key"
)
_COUNTS = text("SELECT queue, status, count(*) FROM vesper_jobs GROUP BY queue, status")
_AT = bindparam("at", type_=utc_datetime())
_TAKE = (
    update(jobs)
    .where(jobs.c.id.in_(bindparam("ids", expanding=True)), text(CLAIMABLE_SQL))
    .values(
        status=Status.PROCESSING.value,
        attempts=jobs.c.attempts + 1,
        worker_id=bindparam("b_worker_id"),
        lease_token=bindparam("token"),
        lease_expires_at=bindparam("expires_at", type_=utc_datetime()),
        started_at=_AT,
        updated_at=_AT,
    )
    .returning(*jobs.c)
)
_SET_LOG = (
    update(queues).where(queues.c.name == bindparam("b_name")).values(rate_log=bindparam("log"))
)


# A claim from one capped queue in one call: (conn, queue, worker_id, limit, lease, types,
# now) -> its jobs in claim order, or None when the queue has other limits after all.
CappedClaim = Callable[
    [Connection, str, str, int, timedelta, Sequence[str] | None, datetime | None],
    list[JobRecord] | None,
]


def one_limited(
    leases: Sequence[LeaseRef],
    limit: int,
    types: Sequence[str] | None,
    queues: Sequence[str] | None,
    limited: frozenset[str],
) -> bool:
    """Whether a complete_and_claim claims from one limited queue only (a worker's
    per-queue claim): then both go in that queue's transaction, with one commit."""
    return (
        bool(leases)
        and limit > 0
        and (types is None or bool(types))
        and queues is not None
        and len(set(queues)) == 1
        and queues[0] in limited
    )


def claims_apart(
    leases: Sequence[LeaseRef],
    limit: int,
    types: Sequence[str] | None,
    queues: Sequence[str] | None,
    limited: frozenset[str],
) -> bool:
    """Whether a complete_and_claim records its completions first and claims in calls of
    its own (complete_apart): nothing to complete or to claim, or a limited queue among
    those claimed, whose claim is a transaction of its own and goes first."""
    return (
        not leases
        or limit <= 0
        or (types is not None and not types)
        or (queues is not None and not queues)
        or bool(limited.intersection(queues if queues is not None else limited))
    )


class CompletesAndClaims(Protocol):
    """The two calls of a SQL job repository that complete_apart makes."""

    def complete(
        self,
        leases: Sequence[LeaseRef],
        *,
        now: datetime | None = None,
        results: Mapping[JobId, str] | None = None,
    ) -> list[JobRecord]: ...

    def claim(
        self,
        *,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None = None,
        queues: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> list[JobRecord]: ...


def complete_apart(
    store: CompletesAndClaims,
    leases: Sequence[LeaseRef],
    *,
    worker_id: str,
    limit: int,
    lease: timedelta,
    types: Sequence[str] | None,
    queues: Sequence[str] | None,
    now: datetime | None,
    results: Mapping[JobId, str] | None,
) -> tuple[list[JobRecord], list[JobRecord]]:
    """`store.complete`, then `store.claim` unless the completions recorded nothing
    (their leases were lost). The completions are committed first: a claim that fails
    after them claims nothing instead of raising (a caller's retry would find their
    leases gone)."""
    completed = store.complete(leases, now=now, results=results)
    if not completed and leases:
        return completed, []
    try:
        claimed = store.claim(
            worker_id=worker_id, limit=limit, lease=lease, types=types, queues=queues, now=now
        )
    except Exception as exc:
        if not leases:
            raise
        log.warning("claim failed after completing a batch: %s", exc)
        return completed, []
    return completed, claimed


class SqlQueues:
    """The queue side of one SQL job repository.

    Args:
        clock: the time to use when a call passes none; on PostgreSQL the database's
            (read inside the transaction, after the queue's lock is held).
        notify: wake idle workers everywhere at the commit of a change (PostgreSQL:
            NOTIFY on the connection).
        postgres: the dialect is PostgreSQL (else SQLite, whose writes hold its lock).
        capped: the repository's own claim from a capped queue, run as one statement.
    """

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[Connection], datetime],
        notify: Callable[[Connection], object] | None = None,
        postgres: bool = False,
        capped: CappedClaim | None = None,
    ) -> None:
        self._db = db
        self._capped_claim = capped
        self._clock = clock
        self._notify = notify
        self._postgres = postgres
        self._lock = threading.Lock()
        self._limited: frozenset[str] = frozenset()
        self._capped: frozenset[str] = frozenset()
        self._limited_at = -LIMITED_TTL
        lock = " FOR UPDATE" if self._postgres else ""
        self._row = select(queues).where(queues.c.name == bindparam("b_name"))
        self._locked_row = text(f"SELECT * FROM vesper_queues WHERE name = :b_name{lock}")
        self._due = (
            select(jobs.c.queue, jobs.c.type, func.min(jobs.c.run_at))
            .where(text(CLAIMABLE_SQL), jobs.c.run_at <= _AT)
            .group_by(jobs.c.queue, jobs.c.type)
        )
        insert = (postgresql.insert if self._postgres else sqlite.insert)(queues)
        upsert = insert.values(**{c.name: bindparam(f"b_{c.name}", type_=c.type) for c in queues.c})
        self._upsert = upsert.on_conflict_do_update(
            index_elements=[queues.c.name],
            set_={c.name: upsert.excluded[c.name] for c in queues.c if c.name != "name"},
        )
        self._picks: dict[tuple[bool, bool, bool], Any] = {}
        self._takes: dict[tuple[bool, bool], Any] = {}

    # -- which queues are limited ---------------------------------------------------

    def limited(self) -> frozenset[str]:
        """The names of the limited queues, as read at most LIMITED_TTL ago."""
        return self._read_limited()[0]

    def capped(self) -> frozenset[str]:
        """The limited queues whose only limits are `paused` and `concurrency`, as read
        at most LIMITED_TTL ago."""
        return self._read_limited()[1]

    def _read_limited(self) -> tuple[frozenset[str], frozenset[str]]:
        now = time.monotonic()
        with self._lock:
            if now - self._limited_at < LIMITED_TTL:
                return self._limited, self._capped
        rows = self._db.read(lambda conn: conn.execute(_LIMITED).all())
        names = frozenset(name for name, _ in rows)
        capped = frozenset(name for name, only_capped in rows if only_capped)
        with self._lock:
            self._limited, self._capped, self._limited_at = names, capped, now
        return names, capped

    def forget(self) -> None:
        """Read the limited queues again at the next claim (their settings changed)."""
        with self._lock:
            self._limited_at = -LIMITED_TTL

    # -- the limited path -----------------------------------------------------------

    def claim(
        self,
        name: str,
        *,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None,
        now: datetime | None,
    ) -> list[JobRecord]:
        """Claim from the queue `name`, keeping its settings, in one transaction; the
        jobs in claim order by effective priority."""
        capped_claim = self._capped_claim
        if capped_claim is not None and name in self.capped():
            claimed = self._db.statement(
                lambda conn: capped_claim(conn, name, worker_id, limit, lease, types, now)
            )
            if claimed is not None:
                return claimed
            self.forget()

        def work(conn: Connection) -> list[JobRecord]:
            row = self._lock_row(conn, name)
            if row is _BUSY:
                return []
            return self._claim_in(conn, row, name, worker_id, limit, lease, types, now)

        return self._db.transaction(work)

    def complete_and_claim(
        self,
        complete: Callable[[Connection], list[JobRecord]],
        name: str,
        *,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None,
        now: datetime | None,
    ) -> tuple[list[JobRecord], list[JobRecord]]:
        """`complete(conn)` (a batch's completions), then `claim` from the limited queue
        `name`, in one transaction: one commit for both. Nothing is claimed when the
        completions recorded nothing (their leases were lost), nor when the queue's row
        stays locked past QUEUE_LOCK_WAIT (the completions are then recorded alone)."""

        def work(conn: Connection) -> tuple[list[JobRecord], list[JobRecord]] | None:
            # the lock first: a wait that ends in a timeout aborts the transaction, and
            # with it the completions it would hold
            row = self._lock_row(conn, name)
            if row is _BUSY:
                return None  # its COMMIT rolls the aborted transaction back
            done = complete(conn)
            if not done:
                return done, []
            return done, self._claim_in(conn, row, name, worker_id, limit, lease, types, now)

        both = self._db.transaction(work)
        if both is None:
            return self._db.transaction(complete), []
        return both

    def _lock_row(self, conn: Connection, name: str) -> Any:
        """The queue's row, locked until the transaction ends (None: the queue has none),
        or _BUSY when PostgreSQL's lock stayed taken past QUEUE_LOCK_WAIT.

        A claimer holds the row for a few milliseconds; one whose connection is cut
        (a network partition) holds it until its backend notices, up to the idle
        transaction timeout. The others then claim the queue's jobs a little later
        instead of waiting: their claims of the other queues, their outcomes and their
        claim rounds go on. After _BUSY the transaction is aborted: nothing more may run
        in it.
        """
        if not self._postgres:
            return conn.execute(self._locked_row, {"b_name": name}).first()
        conn.execute(_LOCK_WAIT)
        try:
            row = conn.execute(self._locked_row, {"b_name": name}).first()
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                return _BUSY
            raise
        conn.execute(_WAIT_AS_BEFORE)  # the jobs' rows are waited for as anywhere else
        return row

    def _claim_in(
        self,
        conn: Connection,
        row: Any,
        name: str,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None,
        now: datetime | None,
    ) -> list[JobRecord]:
        """The claim, under the lock of the queue's `row` (None: it has none)."""
        # read after the lock is granted (not with the row: PostgreSQL computes a locking
        # SELECT's columns before it waits), so a claim is never dated earlier
        at = now or self._clock(conn)
        settings = queue_settings_of(row) if row is not None else QueueSettings(name=name)
        log = rate_log_of(row.rate_log) if row is not None else []
        if settings.key_concurrency is None:
            return self._take_at_once(conn, settings, log, at, worker_id, limit, lease, types)
        busy: dict[str, int] = {}
        running = 0
        for key, n in conn.execute(_RUNNING, {"queue": name}).all():
            running += n
            if key is not None:
                busy[key] = n
        allowed = queue_allowance(settings, processing=running, log=log, now=at, limit=limit)
        if allowed <= 0:
            return []
        per_key = settings.key_concurrency
        # enough candidates for the per-key rule to skip the saturated keys' jobs
        cap = allowed if per_key is None else allowed + per_key * (running + allowed)
        params: dict[str, Any] = {"queue": name, "at": at, "cap": cap}
        if types is not None:
            params["types"] = list(types)
        if settings.aging is not None:
            params["aging"] = settings.aging.total_seconds()
        if per_key is not None:
            params["per_key"] = per_key
        statement = self._pick(types is not None, settings.aging is not None, per_key)
        candidates = [(r[0], r[1]) for r in conn.execute(statement, params).all()]
        picked = pick_by_key(candidates, busy, per_key, allowed)
        if not picked:
            return []
        taken = conn.execute(
            _TAKE,
            {
                "ids": picked,
                "b_worker_id": worker_id,
                "token": uuid.uuid4(),
                "expires_at": at + lease,
                "at": at,
            },
        ).all()
        if settings.rate is not None and row is not None:
            after = rate_log_after(settings.rate, log, at, len(taken))
            conn.execute(_SET_LOG, {"b_name": name, "log": rate_log_text(after)})
        # in the order picked (effective priority): RETURNING keeps no order
        place = {job_id: i for i, job_id in enumerate(picked)}
        return sorted(jobs_of(taken), key=lambda job: place[job.id])

    def _take_at_once(
        self,
        conn: Connection,
        settings: QueueSettings,
        log: list[datetime],
        at: datetime,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None,
    ) -> list[JobRecord]:
        """A queue without key_concurrency: its processing jobs counted, and its due
        jobs picked and leased, in one statement. It runs under the queue's lock, in a
        statement begun after the lock was granted, so it sees every earlier claim."""
        unlimited = attrs.evolve(settings, concurrency=None)  # counted in the statement
        cap = queue_allowance(unlimited, processing=0, log=log, now=at, limit=limit)
        if cap <= 0:
            return []
        params: dict[str, Any] = {
            "queue": settings.name,
            "at": at,
            "cap": cap,
            # no concurrency limit: a bound no count reaches
            "concurrency": settings.concurrency if settings.concurrency is not None else 2**31 - 1,
            "b_worker_id": worker_id,
            "token": uuid.uuid4(),
            "expires_at": at + lease,
        }
        if types is not None:
            params["types"] = list(types)
        if settings.aging is not None:
            params["aging"] = settings.aging.total_seconds()
        statement = self._take_statement(types is not None, settings.aging is not None)
        taken = jobs_of(conn.execute(statement, params).all())
        if settings.rate is not None:
            after = rate_log_after(settings.rate, log, at, len(taken))
            conn.execute(_SET_LOG, {"b_name": settings.name, "log": rate_log_text(after)})
        aging = settings.aging
        return sorted(  # RETURNING keeps no order: effective priority, run_at, insertion
            taken,
            key=lambda j: (-effective_priority(j.priority, j.run_at, at, aging), j.run_at, j.seq),
        )

    def _take_statement(self, typed: bool, aged: bool) -> Any:
        shape = (typed, aged)
        statement = self._takes.get(shape)
        if statement is not None:
            return statement
        effective = self._effective() if aged else "priority"
        bounded = "GREATEST(0, LEAST(" if self._postgres else "max(0, min("
        sql = (
            "UPDATE vesper_jobs SET status = 'processing', attempts = attempts + 1, "
            "worker_id = :b_worker_id, lease_token = :token, lease_expires_at = :expires_at, "
            f"started_at = :at, updated_at = :at WHERE {CLAIMABLE_SQL} AND id IN ("
            f"SELECT id FROM vesper_jobs WHERE {CLAIMABLE_SQL} AND queue = :queue "
            f"AND run_at <= :at {'AND type IN :types' if typed else ''} "
            f"ORDER BY {effective} DESC, run_at, seq "
            f"LIMIT {bounded}:cap, :concurrency - (SELECT count(*) FROM vesper_jobs "
            f"WHERE {PROCESSING_SQL} AND queue = :queue)))) RETURNING *"
        )
        binds: list[BindParameter[Any]] = [
            bindparam("at", type_=utc_datetime()),
            bindparam("expires_at", type_=utc_datetime()),
            bindparam("token", type_=Uuid()),
        ]
        if typed:
            binds.append(bindparam("types", expanding=True))
        statement = text(sql).bindparams(*binds).columns(*jobs.c)
        self._takes[shape] = statement
        return statement

    def claim_limited(
        self,
        limited: frozenset[str],
        *,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None,
        queues: Sequence[str] | None,
        now: datetime | None,
    ) -> list[JobRecord]:
        """Claims from the `limited` queues among `queues` (None: all), each queue in a
        transaction of its own, until `limit` jobs are claimed."""
        claimed: list[JobRecord] = []
        for name in sorted(limited if queues is None else limited.intersection(queues)):
            if len(claimed) >= limit:
                break
            claimed += self.claim(
                name,
                worker_id=worker_id,
                limit=limit - len(claimed),
                lease=lease,
                types=types,
                now=now,
            )
        return claimed

    def _pick(self, typed: bool, aged: bool, per_key: int | None) -> Any:
        """The candidates' statement: due jobs of the queue in effective priority order;
        with key_concurrency, at most that many per key (the first ones)."""
        shape = (typed, aged, per_key is not None)
        statement = self._picks.get(shape)
        if statement is not None:
            return statement
        effective = self._effective() if aged else "priority"
        where = f"{CLAIMABLE_SQL} AND queue = :queue AND run_at <= :at"
        if typed:
            where += " AND type IN :types"
        if per_key is None:
            sql = (
                f"SELECT id, concurrency_key FROM vesper_jobs WHERE {where} "
                f"ORDER BY {effective} DESC, run_at, seq LIMIT :cap"
            )
        else:
            sql = (
                "SELECT id, concurrency_key FROM ("
                f"SELECT id, concurrency_key, run_at, seq, {effective} AS eff, "
                f"row_number() OVER (PARTITION BY concurrency_key ORDER BY {effective} DESC, "
                f"run_at, seq) AS rn FROM vesper_jobs WHERE {where}) AS c "
                "WHERE concurrency_key IS NULL OR rn <= :per_key "
                "ORDER BY eff DESC, run_at, seq LIMIT :cap"
            )
        binds = [bindparam("at", type_=utc_datetime())]
        if typed:
            binds.append(bindparam("types", expanding=True))
        statement = text(sql).bindparams(*binds).columns(jobs.c.id, jobs.c.concurrency_key)
        self._picks[shape] = statement
        return statement

    def _effective(self) -> str:
        """SQL of effective_priority (queues.py): +1 per `aging` seconds waited, at most 10."""
        if self._postgres:
            waited = "EXTRACT(EPOCH FROM (CAST(:at AS timestamptz) - run_at))"
            return f"LEAST(10, priority + CAST(floor({waited} / :aging) AS integer))"
        waited = "((julianday(:at) - julianday(run_at)) * 86400.0)"
        return f"MIN(10, priority + CAST({waited} / :aging AS INTEGER))"

    # -- settings and the view ------------------------------------------------------

    def settings(self) -> list[QueueSettings]:
        rows = self._db.read(lambda conn: conn.execute(select(queues).order_by("name")).all())
        return [queue_settings_of(row) for row in rows]

    def configure(
        self, name: str, change: QueueChange, *, now: datetime | None = None
    ) -> QueueSettings:
        check_queue(name, "name")

        def work(conn: Connection) -> QueueSettings:
            row = conn.execute(self._locked_row, {"b_name": name}).first()
            before = queue_settings_of(row) if row is not None else QueueSettings(name=name)
            after = change.apply(before)
            log = row.rate_log if row is not None and after.rate == before.rate else "[]"
            values = {**queue_row(after), "rate_log": log, "updated_at": now or self._clock(conn)}
            conn.execute(self._upsert, {f"b_{k}": v for k, v in values.items()})
            if self._notify is not None:
                self._notify(conn)  # delivered at the commit: idle workers claim again
            return after

        settings = self._db.transaction(work)
        self.forget()
        return settings

    def states(self, *, now: datetime | None = None) -> list[QueueState]:
        def work(conn: Connection) -> list[QueueState]:
            at = now or self._clock(conn)
            counts: dict[str, dict[Status, int]] = {}
            for queue, status, n in conn.execute(_COUNTS).all():
                counts.setdefault(queue, dict.fromkeys(Status, 0))[Status(status)] = n
            oldest: dict[str, datetime] = {}
            due_types: dict[str, set[str]] = {}
            for queue, job_type, run_at in conn.execute(self._due, {"at": at}).all():
                due_types.setdefault(queue, set()).add(job_type)
                moment = aware_utc(run_at)
                if queue not in oldest or moment < oldest[queue]:
                    oldest[queue] = moment
            stored = {
                row.name: queue_settings_of(row) for row in conn.execute(select(queues)).all()
            }
            return [
                QueueState(
                    settings=stored.get(name) or QueueSettings(name=name),
                    counts=counts.get(name, dict.fromkeys(Status, 0)),
                    oldest_due_run_at=oldest.get(name),
                    due_types=tuple(sorted(due_types.get(name, ()))),
                    now=at,
                )
                for name in sorted(set(counts) | set(stored))
            ]

        return self._db.read(work)


class SqlQueueing:
    """claim with `queues=`, queue_settings, configure_queue and queue_states
    (QueueingJobRepository), for a repository that sets `_queues` and claims from the
    queues without limits itself, in `_claim_unlimited`."""

    _queues: SqlQueues

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
        if limit <= 0 or (types is not None and not types) or (queues is not None and not queues):
            return []
        limited = self._queues.limited()
        # the limited queues first, each within its limits; the others fill the rest
        # (first, a busy queue without limits would leave a limited one nothing)
        claimed = self._queues.claim_limited(
            limited,
            worker_id=worker_id,
            limit=limit,
            lease=lease,
            types=types,
            queues=queues,
            now=now,
        )
        if len(claimed) < limit and (queues is None or not limited.issuperset(queues)):
            claimed += self._claim_unlimited(
                worker_id, limit - len(claimed), lease, types, queues, now
            )
        return claimed

    def _claim_unlimited(
        self,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None,
        queues: Sequence[str] | None,
        now: datetime | None,
    ) -> list[JobRecord]:
        """Up to `limit` due jobs of `queues` (None: any queue) and `types` (None: any
        type; neither is empty), in claim order, leased as JobRepository.claim leases
        them: one statement, which leaves out the limited queues (NOT_LIMITED_SQL).
        The limited ones are claimed by SqlQueues, one transaction each."""
        raise NotImplementedError

    def queue_settings(self) -> list[QueueSettings]:
        return self._queues.settings()

    def configure_queue(
        self, name: str, change: QueueChange, *, now: datetime | None = None
    ) -> QueueSettings:
        return self._queues.configure(name, change, now=now)

    def queue_states(self, *, now: datetime | None = None) -> list[QueueState]:
        return self._queues.states(now=now)
