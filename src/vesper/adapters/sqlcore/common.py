"""What SQL job repositories share: reads, cancel/retry, and idempotent submission.

Statements are built once per repository (they depend on how the dialect spells "now")
and executed with bound parameters, so SQLAlchemy compiles each one a single time.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import attrs
from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Integer,
    Select,
    Uuid,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.dml import ReturningUpdate
from sqlalchemy.sql.elements import TextClause

from vesper.adapters.sqlcore.rows import aware_utc, job_of, row_of
from vesper.adapters.sqlcore.tables import (
    CLAIMABLE_SQL,
    FINISHED_SQL,
    PROCESSING_SQL,
    UNIQUE_ACTIVE_SQL,
    jobs,
    utc_datetime,
)
from vesper.application.ports import Submitted
from vesper.domain.activity import MINUTE, Activity, minute_of
from vesper.domain.bulk import BulkAction, BulkBatch, BulkFilter, kinds_of, slots_of, take
from vesper.domain.errors import IdempotencyConflict, IllegalTransition, JobNotFound, UniqueKeyHeld
from vesper.domain.job import JobId, JobRecord, UniqueSlot
from vesper.domain.query import JobPage, JobQuery, page_of
from vesper.domain.states import ACTIVE, TRANSITIONS, Status, allowed
from vesper.domain.stats import ActiveJobs, QueueStats, QueueSummary, check_cap
from vesper.domain.submission import MAX_PRIORITY, MIN_PRIORITY, NewJob

T = TypeVar("T")

BOUND = select(jobs).where(jobs.c.idempotency_key.in_(bindparam("keys", expanding=True)))
LAST_SEQ = select(func.coalesce(func.max(jobs.c.seq), 0))
INSERT = insert(jobs)
_MAX_SEQ = 2**63 - 1  # BIGINT / SQLite INTEGER
_IDS_PER_READ = 1000  # SQLite binds each id of an IN list as a parameter of its own
# the active jobs holding some (queue, unique key) slots (the partial unique index's
# rows); `slots`: a list of UniqueSlot
ACTIVE_HOLDERS = select(jobs).where(
    text(UNIQUE_ACTIVE_SQL),
    tuple_(jobs.c.queue, jobs.c.unique_key).in_(bindparam("slots", expanding=True)),
)
_RACES = 3  # cancel/retry: a status that keeps changing under us is reported after this


def status_list(action: str) -> str:
    """The SQL list of the statuses `action` may start from (the domain's table)."""
    return ", ".join(f"'{status.value}'" for status in sorted(TRANSITIONS[action][0]))


# finished work by minute: done and dlq jobs by finished_at, failed ones by their last
# failure (updated_at); both ranges bounded by :since and :until (the store's now);
# the first reads the finished jobs' (status, finished_at) index
_ACTIVITY = """
SELECT m, SUM(d), SUM(f) FROM (
    SELECT {finished} AS m,
           CASE WHEN status = 'done' THEN 1 ELSE 0 END AS d,
           CASE WHEN status = 'dlq' THEN 1 ELSE 0 END AS f
    FROM vesper_jobs
    WHERE {finished_sql} AND status IN ('done', 'dlq')
      AND finished_at >= :since AND finished_at <= :until
    UNION ALL
    SELECT {updated} AS m, 0 AS d, 1 AS f
    FROM vesper_jobs
    WHERE status = 'failed' AND updated_at >= :since AND updated_at <= :until
) AS minutes
GROUP BY m
"""


# The active jobs of each queue (queue, waiting, running; a queue may have a row of each
# kind, to be added up), at a cost bounded by the active jobs and the cap, never by the
# finished ones. Waiting: the queues of the per-queue claim index (queue, priority DESC,
# run_at, seq) WHERE pending/failed, found one min() per queue (a loose index scan: one
# index descent per queue, however many jobs each holds), then each queue's entries
# counted up to :limit. Running: the processing jobs, counted exactly (their partial
# indexes have no queue column; they number at most the fleet's job slots, since a lease
# past its expiry is taken back). Every queue with settings, with 0.
_ACTIVE_BY_QUEUE = """
WITH RECURSIVE waiting(queue) AS (
    SELECT min(queue) FROM {claim_index} WHERE {claimable}
    UNION ALL
    SELECT (SELECT min(queue) FROM {claim_index} WHERE {claimable} AND queue > waiting.queue)
    FROM waiting WHERE waiting.queue IS NOT NULL
)
SELECT waiting.queue,
       (SELECT count(*) FROM (
            SELECT 1 FROM {claim_index} WHERE {claimable} AND queue = waiting.queue
            LIMIT :limit) AS capped),
       0
FROM waiting WHERE waiting.queue IS NOT NULL
UNION ALL
SELECT queue, 0, count(*) FROM vesper_jobs WHERE {processing} GROUP BY queue
UNION ALL
SELECT name, 0, 0 FROM vesper_queues
"""


def active_by_queue_query(postgres: bool) -> TextClause:
    """(queue, waiting up to :limit, running) rows, to add up by queue. SQLite is told
    the index: without statistics it reads the (status, seq) index instead, every
    waiting job's entry (70 ms instead of 0.2 ms with 150,000 waiting)."""
    claim_index = (
        "vesper_jobs" if postgres else "vesper_jobs INDEXED BY vesper_jobs_queue_claim_idx"
    )
    return text(
        _ACTIVE_BY_QUEUE.format(
            claim_index=claim_index, claimable=CLAIMABLE_SQL, processing=PROCESSING_SQL
        )
    ).bindparams(bindparam("limit", type_=Integer()))


def _postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


class Database(Protocol):
    """How a SQL store runs a unit of work on a connection: the one thing SqlJobReads
    needs from it. Each method maps the driver's errors to the store's error contract
    (StoreUnavailable, SchemaNotMigrated) and retries transient lock errors itself."""

    def read(self, work: Callable[[Connection], T]) -> T:
        """Run `work`, which changes nothing."""
        ...

    def statement(self, work: Callable[[Connection], T]) -> T:
        """Run `work`, one statement that changes rows (atomic on its own)."""
        ...

    def transaction(self, work: Callable[[Connection], T], *, durable: bool = False) -> T:
        """Run `work` in one transaction: committed if it returns, rolled back if it
        raises; `durable`: the commit is on disk when this returns."""
        ...


class SqlJobReads:
    """get, find, stats, cancel and retry, for a repository that sets `_db` and `_now`.

    `_now` is the SQL expression of the current time: the bound parameter `now` on
    SQLite, `COALESCE(:now, statement_timestamp())` on PostgreSQL.
    """

    def __init__(self, db: Database, now: ColumnElement[datetime]) -> None:
        self._db = db
        self._now = now
        self._get = select(jobs).where(jobs.c.id == bindparam("job_id"))
        self._get_many = select(jobs).where(jobs.c.id.in_(bindparam("ids", expanding=True)))
        self._delete = (
            delete(jobs)
            .where(jobs.c.id == bindparam("job_id"), text(FINISHED_SQL))
            .returning(*jobs.c)
        )
        self._finds: dict[tuple[bool, ...], Select[Any]] = {}
        self._counts = select(jobs.c.status, jobs.c.priority, func.count()).group_by(
            jobs.c.status, jobs.c.priority
        )
        self._oldest = oldest_due_query(now)
        self._capped_counts = capped_counts_query()
        self._clock_now = select(now.label("now"))
        self._activities: dict[bool, TextClause] = {}
        self._active_by_queue = {pg: active_by_queue_query(pg) for pg in (False, True)}
        # a processing job is not cancelled but gets a cancel request (the first one's
        # time; a second request changes nothing): JobRecord.cancel
        running = jobs.c.status == Status.PROCESSING.value
        requested = and_(running, jobs.c.cancel_requested_at.is_not(None))
        self._cancel = self._transition(
            "cancel",
            "request_cancel",
            status=case((running, jobs.c.status), else_=Status.CANCELLED.value),
            cancel_requested_at=case(
                (running, func.coalesce(jobs.c.cancel_requested_at, now)),
                else_=jobs.c.cancel_requested_at,
            ),
            updated_at=case((requested, jobs.c.updated_at), else_=now),
            finished_at=case((running, jobs.c.finished_at), else_=now),
        )
        # a finished job whose unique key another active job of its queue holds is not
        # retried
        holder = jobs.alias("holder")
        key_free = ~exists().where(
            holder.c.unique_key == jobs.c.unique_key,
            holder.c.queue == jobs.c.queue,
            holder.c.id != jobs.c.id,
            holder.c.status.in_(sorted(s.value for s in ACTIVE)),
        )
        self._retry = self._transition(
            "retry",
            key_free,
            status=Status.PENDING.value,
            retries=0,
            run_at=now,
            updated_at=now,
            started_at=None,
            finished_at=None,
            cancel_requested_at=None,
        )
        # what each bulk action sets: the single-job statements' values, less the
        # cancel request's branch (a bulk cancel takes pending and failed jobs only)
        self._bulk_values: dict[BulkAction, dict[str, Any]] = {
            BulkAction.RETRY: {
                "status": Status.PENDING.value,
                "retries": 0,
                "run_at": now,
                "updated_at": now,
                "started_at": None,
                "finished_at": None,
                "cancel_requested_at": None,
            },
            BulkAction.CANCEL: {
                "status": Status.CANCELLED.value,
                "updated_at": now,
                "finished_at": now,
            },
        }

    def _transition(
        self, *actions: str | ColumnElement[bool], **values: Any
    ) -> ReturningUpdate[Any]:
        """The UPDATE of one job by `actions` (their statuses), under any conditions
        given among them."""
        names = [a for a in actions if isinstance(a, str)]
        conditions = [a for a in actions if not isinstance(a, str)]
        statuses = ", ".join(status_list(action) for action in names)
        return (
            update(jobs)
            .where(jobs.c.id == bindparam("job_id"), text(f"status IN ({statuses})"), *conditions)
            .values(**values)
            .returning(*jobs.c)
        )

    def _at(self, now: datetime | None) -> datetime | None:
        """The `now` parameter to bind (SQLite resolves None with its clock)."""
        return now

    def get(self, job_id: JobId) -> JobRecord:
        row = self._db.read(lambda conn: conn.execute(self._get, {"job_id": job_id}).first())
        if row is None:
            raise JobNotFound(job_id)
        return job_of(row)

    def find(self, query: JobQuery) -> JobPage:
        if query.type is not None and "\x00" in query.type:
            # no stored type holds NUL (submit refuses control characters), and
            # PostgreSQL text cannot even be compared with one
            return page_of([], query.limit)
        before = query.before_seq
        if before is not None and before > _MAX_SEQ:
            before = None  # every seq is below it (and the column cannot hold it)
        search_id = query.search_id
        shape = (
            query.status is not None,
            query.type is not None,
            query.priority is not None,
            query.queue is not None,
            before is not None,
            query.search is not None,
            search_id is not None,
        )
        params = {
            "status": query.status.value if query.status is not None else None,
            "type": query.type,
            "priority": query.priority,
            "queue": query.queue,
            "before": before,
            "search": query.search,
            "search_id": search_id,
            "limit": query.limit + 1,
        }

        def work(conn: Connection) -> Any:
            statement = self._find_statement((*shape, _postgres(conn)))
            return conn.execute(statement, params).all()

        rows = self._db.read(work)
        return page_of([job_of(row) for row in rows], query.limit)

    def _find_statement(self, shape: tuple[bool, ...]) -> Select[Any]:
        """`shape`: which filters are present, then whether the dialect is PostgreSQL."""
        # one statement per combination of filters: a catch-all `(:x IS NULL OR ...)`
        # would keep PostgreSQL's generic plans off the (status, seq) and (type, seq) indexes
        statement = self._finds.get(shape)
        if statement is None:
            statement = select(jobs)
            for present, column, name in zip(
                shape,
                (jobs.c.status, jobs.c.type, jobs.c.priority, jobs.c.queue),
                ("status", "type", "priority", "queue"),
                strict=False,
            ):
                if present:
                    statement = statement.where(column == bindparam(name))
            if shape[4]:
                statement = statement.where(jobs.c.seq < bindparam("before"))
            if shape[5]:
                # a substring of the key, characters compared exactly (LIKE would need
                # escaping, and SQLite's folds ASCII case)
                position = func.strpos if shape[7] else func.instr
                in_key = position(jobs.c.idempotency_key, bindparam("search")) > 0
                statement = statement.where(
                    or_(jobs.c.id == bindparam("search_id", type_=Uuid()), in_key)
                    if shape[6]
                    else in_key
                )
            statement = statement.order_by(jobs.c.seq.desc()).limit(bindparam("limit"))
            self._finds[shape] = statement
        return statement

    def stats(self, *, now: datetime | None = None) -> QueueStats:
        params = {"now": self._at(now)}

        def work(conn: Connection) -> QueueStats:
            oldest, at = conn.execute(self._oldest, params).one()
            counts = {
                (Status(status), priority): n
                for status, priority, n in conn.execute(self._counts).all()
            }
            return QueueStats(counts=counts, oldest_due_run_at=job_time(oldest), now=at)

        return self._db.read(work)

    def summary(self, *, cap: int, now: datetime | None = None) -> QueueSummary:
        """Counts by status up to `cap` + 1 (the ports' SummaryJobRepository)."""
        check_cap(cap)
        params = {"now": self._at(now), "limit": cap + 1}

        def work(conn: Connection) -> QueueSummary:
            oldest, at = conn.execute(self._oldest, params).one()
            counts = {Status(s): n for s, n in conn.execute(self._capped_counts, params).all()}
            active: dict[str, tuple[int, int]] = {}
            statement = self._active_by_queue[_postgres(conn)]
            for queue, waiting, running in conn.execute(statement, params).all():
                before = active.get(queue, (0, 0))
                active[queue] = (before[0] + waiting, before[1] + running)
            return QueueSummary(
                counts=counts,
                cap=cap,
                oldest_due_run_at=job_time(oldest),
                now=at,
                active_by_queue={
                    queue: ActiveJobs(waiting=w, running=min(r, cap + 1))
                    for queue, (w, r) in sorted(active.items())
                },
            )

        return self._db.read(work)

    def activity(self, *, window: timedelta, now: datetime | None = None) -> Activity:
        """Finished work by minute (the ports' ActivityJobRepository)."""

        def work(conn: Connection) -> Activity:
            statement = self._activity_statement(_postgres(conn))
            at = conn.execute(self._clock_now, {"now": self._at(now)}).scalar_one()
            since = minute_of(at) - (max(1, int(window / MINUTE)) - 1) * MINUTE
            rows = conn.execute(statement, {"since": since, "until": at}).all()
            counts = {
                datetime.strptime(m, "%Y-%m-%d %H:%M").replace(tzinfo=UTC): (int(d), int(f))
                for m, d, f in rows
            }
            return Activity.of(counts, now=at, window=window)

        return self._db.read(work)

    def _activity_statement(self, postgres: bool) -> TextClause:
        statement = self._activities.get(postgres)
        if statement is None:
            # the minute as 'YYYY-MM-DD HH:MM' text: SQLite's timestamps are UTC text
            # already; the two ranges use (finished_at) and (status, seq)
            minute = (
                "to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')"
                if postgres
                else "substr({0}, 1, 16)"
            )
            statement = text(
                _ACTIVITY.format(
                    finished=minute.format("finished_at"),
                    updated=minute.format("updated_at"),
                    finished_sql=FINISHED_SQL,  # the partial index of finished jobs
                )
            ).bindparams(
                bindparam("since", type_=utc_datetime()), bindparam("until", type_=utc_datetime())
            )
            self._activities[postgres] = statement
        return statement

    def cancel(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        return self._change("cancel", self._cancel, job_id, now, also="request_cancel")

    def retry(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        for attempt in range(_RACES):
            try:
                return self._change("retry", self._retry, job_id, now)
            except IntegrityError:
                # a concurrent submit took the unique key between the check and the
                # UPDATE (PostgreSQL): the next try finds its holder
                if attempt == _RACES - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _change(
        self,
        action: str,
        statement: ReturningUpdate[Any],
        job_id: JobId,
        now: datetime | None,
        also: str | None = None,
    ) -> JobRecord:
        params = {"job_id": job_id, "now": self._at(now)}

        def work(conn: Connection) -> JobRecord:
            status = Status.PENDING
            for _ in range(_RACES):
                row = conn.execute(statement, params).first()
                if row is not None:
                    return job_of(row)
                current = conn.execute(self._get, params).first()
                if current is None:
                    raise JobNotFound(job_id)
                status = Status(current.status)
                if not allowed(action, status) and not (also and allowed(also, status)):
                    raise IllegalTransition(job_id, status, action)
                slot = job_of(current).unique_slot
                if action == "retry" and slot is not None:
                    holder = self._active_holders(conn, [slot]).get(slot)
                    if holder is not None and holder.id != job_id:
                        raise UniqueKeyHeld(job_id, status, slot.key, holder.id, queue=slot.queue)
                # the status changed between the two statements: try again
            raise IllegalTransition(job_id, status, action)

        changed = self._db.transaction(work, durable=True)
        self._changed(action, changed)
        return changed

    def _changed(self, action: str, job: JobRecord) -> None:
        """Hook: a job changed by cancel or retry (PostgreSQL notifies listeners)."""

    def get_many(self, job_ids: Sequence[JobId]) -> list[JobRecord]:
        unique = list(dict.fromkeys(job_ids))
        chunks = [unique[i : i + _IDS_PER_READ] for i in range(0, len(unique), _IDS_PER_READ)]

        def work(conn: Connection) -> list[JobRecord]:
            return [
                job_of(row) for ids in chunks for row in conn.execute(self._get_many, {"ids": ids})
            ]

        return self._db.read(work) if chunks else []

    def delete(self, job_id: JobId, *, now: datetime | None = None) -> JobRecord:
        params = {"job_id": job_id}

        def work(conn: Connection) -> JobRecord:
            row = conn.execute(self._delete, params).first()
            if row is not None:
                return job_of(row)
            current = conn.execute(self._get, params).first()
            if current is None:
                raise JobNotFound(job_id)
            raise IllegalTransition(job_id, Status(current.status), "delete")

        return self._db.transaction(work, durable=True)

    def bulk(
        self,
        action: BulkAction,
        where: BulkFilter,
        *,
        limit: int,
        now: datetime | None = None,
    ) -> BulkBatch:
        statuses = sorted(s.value for s in where.statuses(action))
        if (
            limit <= 0
            or (where.type is not None and "\x00" in where.type)
            or where.ids == frozenset()
        ):
            return BulkBatch()
        picked = select(
            jobs.c.id,
            jobs.c.seq,
            jobs.c.status,
            jobs.c.queue,
            jobs.c.unique_key,
            jobs.c.type,
            jobs.c.priority,
        ).where(jobs.c.status.in_(statuses))
        params: dict[str, Any] = {}
        for name, column in (
            ("type", jobs.c.type),
            ("queue", jobs.c.queue),
            ("priority", jobs.c.priority),
            ("after_seq", jobs.c.seq),
        ):
            value = getattr(where, name)
            if value is not None:
                op = operator.gt if name == "after_seq" else operator.eq
                picked = picked.where(op(column, bindparam(f"b_{name}")))
                params[f"b_{name}"] = value
        for name, column in (
            ("created_before", jobs.c.created_at),
            ("touched_before", jobs.c.updated_at),
        ):
            value = getattr(where, name)
            if value is not None:
                picked = picked.where(column < bindparam(f"b_{name}", type_=column.type))
                params[f"b_{name}"] = value
        if where.ids is not None:
            picked = picked.where(jobs.c.id.in_(bindparam("b_only", expanding=True)))
            params["b_only"] = sorted(where.ids)
        picked = self._locked(picked.order_by(jobs.c.seq).limit(limit))
        statement = (
            update(jobs)
            .where(jobs.c.id.in_(bindparam("b_ids", expanding=True)), jobs.c.status.in_(statuses))
            .values(**self._bulk_values[action])
        )

        def work(conn: Connection) -> BulkBatch:
            matching = conn.execute(picked, params).all()
            if not matching:
                return BulkBatch()
            slots = slots_of(matching) if action is BulkAction.RETRY else []
            holders = {}
            if slots:
                active = self._active_holders(conn, slots)
                holders = {slot: job.id for slot, job in active.items()}
            taken, skipped = take(matching, action, holders)
            changed = 0
            if taken:
                ids = {"b_ids": [row.id for row in taken], "now": self._at(now)}
                changed = conn.execute(statement, ids).rowcount
            return BulkBatch(
                changed=changed,
                skipped=len(skipped),
                last_seq=matching[-1].seq,
                kinds=kinds_of(taken),
            )

        for attempt in range(_RACES):
            try:
                batch = self._db.transaction(work, durable=True)
                break
            except IntegrityError:
                # a concurrent submit took a unique key (PostgreSQL): look again
                if attempt == _RACES - 1:
                    raise
        self._bulk_changed(action, batch.changed)
        return batch

    def _active_holders(
        self, conn: Connection, slots: Sequence[UniqueSlot]
    ) -> dict[UniqueSlot, JobRecord]:
        """Hook: the active jobs holding `slots`, by slot (PostgreSQL plans it its own
        way)."""
        return active_holders(conn.execute(ACTIVE_HOLDERS, {"slots": list(slots)}))

    def _locked(self, picked: Select[Any]) -> Select[Any]:
        """Hook: `picked` as the bulk batch reads it (SQLite holds its write lock
        already: nothing to lock)."""
        return picked

    def _bulk_changed(self, action: BulkAction, count: int) -> None:
        """Hook: a bulk batch changed `count` jobs."""


def active_holders(rows: Any) -> dict[UniqueSlot, JobRecord]:
    """The active jobs of `rows` by the (queue, unique key) they hold."""
    holders: dict[UniqueSlot, JobRecord] = {}
    for row in rows:
        job = job_of(row)
        assert job.unique_slot is not None
        holders[job.unique_slot] = job
    return holders


def oldest_due_query(now: ColumnElement[datetime]) -> Select[Any, datetime]:
    """The earliest run_at among due claimable jobs, and now.

    One min() per priority: with the priority fixed, the claim index (priority DESC,
    run_at, seq) holds the due jobs in run_at order, so each min() reads one index entry;
    a single min() over all priorities would read every claimable job's entry."""
    firsts = union_all(
        *(
            select(func.min(jobs.c.run_at).label("run_at")).where(
                text(CLAIMABLE_SQL), jobs.c.priority == priority, jobs.c.run_at <= now
            )
            for priority in range(MIN_PRIORITY, MAX_PRIORITY + 1)
        )
    ).subquery()
    return select(func.min(firsts.c.run_at), now.label("now"))


def capped_counts_query() -> CompoundSelect[str, int]:
    """(status, its jobs counted up to :limit) for each status: each count reads at most
    :limit entries of the (status, seq) index."""

    def capped(status: Status) -> Select[str, int]:
        limit = bindparam("limit", type_=Integer())
        some = select(jobs.c.seq).where(jobs.c.status == status.value).limit(limit)
        return select(literal(status.value).label("status"), func.count()).select_from(
            some.subquery()
        )

    return union_all(*(capped(s) for s in Status))


def job_time(value: datetime | None) -> datetime | None:
    """An aggregate's datetime (min(run_at)) as aware UTC, or None."""
    if value is None:
        return None
    return aware_utc(value)


@attrs.frozen
class SubmitPlan:
    """A batch with the repeats of a key folded: what to insert, and where each result
    comes from."""

    unique: list[NewJob]  # in batch order: every keyless job, the first job of each key
    slots: list[int]  # for each job of the batch, its index in `unique`


def plan_submission(batch: Sequence[NewJob]) -> SubmitPlan:
    """Fold the repeats of an idempotency key inside one batch (as the memory store does).

    Raises:
        IdempotencyConflict: one key twice in the batch with different fingerprints.
    """
    unique: list[NewJob] = []
    by_key: dict[str, int] = {}
    slots: list[int] = []
    for new in batch:
        key = new.idempotency_key
        if key is not None and key in by_key:
            earlier = unique[by_key[key]]
            if earlier.fingerprint != new.fingerprint:
                raise IdempotencyConflict(key)
            slots.append(by_key[key])
            continue
        if key is not None:
            by_key[key] = len(unique)
        slots.append(len(unique))
        unique.append(new)
    return SubmitPlan(unique=unique, slots=slots)


def submit_serialized(conn: Connection, plan: SubmitPlan, at: datetime) -> list[Submitted]:
    """Insert `plan` at `at` in a transaction that no other writer runs beside (SQLite's
    write lock from BEGIN IMMEDIATE; elsewhere, a lock on the jobs table): nobody binds
    a key, takes a unique key or a `seq` meanwhile: the bound keys and the active
    holders of the unique keys are read, then the new jobs are inserted with `seq`
    following the largest one.

    Raises:
        IdempotencyConflict: a key bound to a job with another fingerprint (raise it
            inside the transaction: nothing is inserted).
    """
    keys = [n.idempotency_key for n in plan.unique if n.idempotency_key is not None]
    bound: dict[str, JobRecord] = {}
    if keys:
        for row in conn.execute(BOUND, {"keys": keys}):
            job = job_of(row)
            assert job.idempotency_key is not None
            bound[job.idempotency_key] = job
    unbound = [
        n for n in plan.unique if n.idempotency_key not in bound or n.idempotency_key is None
    ]
    slots = sorted({n.unique_slot for n in unbound if n.unique_slot is not None})
    active = active_holders(conn.execute(ACTIVE_HOLDERS, {"slots": slots})) if slots else {}
    taken = set(active)
    fresh: list[NewJob] = []
    for new in unbound:  # a unique key held in its queue, or taken by an earlier job
        slot = new.unique_slot
        if slot is not None:
            if slot in taken:
                continue
            taken.add(slot)
        fresh.append(new)
    seq = conn.execute(LAST_SEQ).scalar_one()
    created: dict[JobId, JobRecord] = {}
    for offset, new in enumerate(fresh, start=1):
        job = created[new.id] = new.materialize(now=at, seq=seq + offset)
        if job.unique_slot is not None:
            active[job.unique_slot] = job
    results = assemble(plan, created, bound, active)  # IdempotencyConflict: rolls back
    if created:
        conn.execute(INSERT, [row_of(job) for job in created.values()])
    return results


def check_bound(new: NewJob, bound: JobRecord) -> None:
    """A replay must carry the fingerprint of the job its key is bound to."""
    if bound.fingerprint != new.fingerprint:
        raise IdempotencyConflict(new.idempotency_key or "")


def assemble(
    plan: SubmitPlan,
    created: dict[JobId, JobRecord],
    bound: dict[str, JobRecord],
    active: dict[UniqueSlot, JobRecord] | None = None,
) -> list[Submitted]:
    """The results in batch order: created jobs (a repeat of a key: not created), replays,
    and the active jobs holding the unique keys of jobs not inserted (`active`, by
    (queue, unique key)).

    Raises:
        IdempotencyConflict: a key bound to a job with another fingerprint.
    """
    if len(created) == len(plan.unique) == len(plan.slots):  # every job new, none repeated
        return [Submitted(job=created[new.id], created=True) for new in plan.unique]
    results: list[Submitted] = []
    seen: set[JobId] = set()
    for slot in plan.slots:
        new = plan.unique[slot]
        job = created.get(new.id)
        if job is not None:
            results.append(Submitted(job=job, created=new.id not in seen))
            seen.add(new.id)
            continue
        replayed = bound.get(new.idempotency_key) if new.idempotency_key is not None else None
        if replayed is not None:
            check_bound(new, replayed)
            results.append(Submitted(job=replayed, created=False))
            continue
        holder = (active or {}).get(new.unique_slot) if new.unique_slot is not None else None
        if holder is None:
            raise RuntimeError(f"job {new.id} was not inserted, and no key explains it")
        results.append(Submitted(job=holder, created=False))
    return results
