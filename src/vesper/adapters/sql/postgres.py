"""The PostgreSQL job repository: one statement per call on the hot path.

The statements, and how they run on the driver's own connection, are in
postgres_statements.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any, TypeVar

import attrs
import psycopg
from psycopg.rows import dict_row, tuple_row
from sqlalchemy import DateTime, Select, bindparam, cast, func, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import TextClause

from vesper.adapters.sql import caller
from vesper.adapters.sql.engines import Database
from vesper.adapters.sql.postgres_statements import (
    ACTIVE_HOLDERS,
    BLANK,
    BOUND,
    CAPPED_STALE,
    CLAIM,
    CLAIM_CAPPED,
    CLAIMS,
    COMPLETE,
    COMPLETE_AND_CLAIM_CAPPED,
    COMPLETES_AND_CLAIMS,
    EXPIRE,
    FAIL,
    GET_MANY,
    INSERT,
    INSERT_NOTIFY,
    INSERT_ONE_NOTIFY,
    NOTIFY,
    NOTIFY_FINISHED,
    PRUNE,
    RELEASE,
    RENEW,
    SNOOZE,
    SUPPLIED,
    ClaimShape,
    holder_params,
    run,
)
from vesper.adapters.sqlcore.common import (
    SqlJobReads,
    SubmitPlan,
    active_holders,
    assemble,
    job_time,
    plan_submission,
)
from vesper.adapters.sqlcore.queues import (
    SqlQueueing,
    SqlQueues,
    claims_apart,
    complete_apart,
    one_limited,
)
from vesper.adapters.sqlcore.rows import in_claim_order, job_of, jobs_of
from vesper.adapters.sqlcore.tables import utc_datetime
from vesper.application.ports import Capabilities, Submitted
from vesper.domain.bulk import BulkAction
from vesper.domain.job import (
    LEASE_EXPIRED_ERROR,
    Failure,
    JobId,
    JobRecord,
    LeaseRef,
    Snoozed,
    UniqueSlot,
)
from vesper.domain.retention import check_ages
from vesper.domain.states import Status
from vesper.domain.submission import NewJob

__all__ = ["CLAIM", "PostgresJobRepository"]  # CLAIM: the fault matrix EXPLAINs it (R15)

T = TypeVar("T")

CLOCK = text("SELECT statement_timestamp()")
# a unique key whose holder finished between the INSERT and the read of it: inserted again
_UNIQUE_RACES = 3


def now_expression() -> Any:
    """`COALESCE(:now, statement_timestamp())` as a SQLAlchemy expression."""
    return func.coalesce(
        cast(bindparam("now", type_=utc_datetime()), DateTime(timezone=True)),
        func.statement_timestamp(),
    )


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; an error message is the one free text that may
    return value.replace("\x00", "\ufffd")


class PostgresJobRepository(SqlQueueing, SqlJobReads):
    """Jobs in PostgreSQL: any number of processes on any number of machines."""

    capabilities = Capabilities(
        multi_process=True,
        complete_and_claim=True,
        transactional_submit=True,
        activity=True,
        summary=True,
        queues=True,
    )

    _db: Database  # the engines' Database, which has durable_statement too

    def __init__(self, db: Database, *, beat: Database | None = None) -> None:
        super().__init__(db, now_expression())
        self._beat = beat or db  # lease renewal gets its own pool: a busy one cannot starve it
        self._queues = SqlQueues(
            db,
            clock=_database_clock,
            notify=lambda conn: run(conn, NOTIFY),
            postgres=True,
            capped=_claim_capped,
        )

    def now(self) -> datetime:
        value = self._db.read(lambda conn: conn.execute(CLOCK).scalar_one())
        moment = job_time(value)
        assert moment is not None
        return moment

    def submit(self, jobs: Sequence[NewJob], *, now: datetime | None = None) -> list[Submitted]:
        if not jobs:
            return []
        plan = plan_submission(jobs)
        insert, params = _insert_for(plan, now)
        if insert is not INSERT:
            # one job, or only new ones (no keys): all or nothing in one statement, which
            # a durable session commits in its own round trip
            return self._db.durable_statement(
                lambda conn: run_steps(conn, submission(plan, insert, params))
            )
        return self._db.transaction(
            lambda conn: run_steps(conn, submission(plan, insert, params)), durable=True
        )

    # -- in the caller's transaction (TransactionalJobRepository) --------------------------

    def is_async(self, connection: object) -> bool:
        return caller.kind_of(connection, database="postgresql").endswith("_async")

    def submit_in(self, connection: object, jobs: Sequence[NewJob]) -> list[Submitted]:
        kind = caller.kind_of(connection, database="postgresql")
        if not jobs:
            return []
        plan = plan_submission(jobs)
        steps = submission(plan, *_insert_for(plan, None))
        if kind == "psycopg":
            assert isinstance(connection, psycopg.Connection)
            return caller.run_steps_psycopg(connection, steps)
        if kind != "sqlalchemy":
            raise TypeError("connection: an asyncio connection: use submit_in_async")
        return caller.run_steps_sqlalchemy(caller.sqlalchemy_connection(connection), steps)

    async def submit_in_async(self, connection: object, jobs: Sequence[NewJob]) -> list[Submitted]:
        kind = caller.kind_of(connection, database="postgresql")
        if not jobs:
            return []
        plan = plan_submission(jobs)
        steps = submission(plan, *_insert_for(plan, None))
        if kind == "psycopg_async":
            assert isinstance(connection, psycopg.AsyncConnection)
            return await caller.run_steps_psycopg_async(connection, steps)
        if kind != "sqlalchemy_async":
            raise TypeError("connection: not an asyncio connection: use submit_in")
        return await caller.run_async(
            connection, lambda conn: caller.run_steps_sqlalchemy(conn, steps)
        )

    def after_commit(self, connection: object, callback: Callable[[], None]) -> None:
        caller.after_commit(connection, callback)

    def _claim_unlimited(
        self,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None,
        queues: Sequence[str] | None,
        now: datetime | None,
    ) -> list[JobRecord]:
        params = _claim_params(worker_id, limit, lease, types, queues, now)
        statement = CLAIMS[_shape(types, queues)]
        rows = self._db.statement(lambda conn: run(conn, statement, params))
        return in_claim_order(jobs_of(rows))

    def complete(
        self,
        leases: Sequence[LeaseRef],
        *,
        now: datetime | None = None,
        results: Mapping[JobId, str] | None = None,
    ) -> list[JobRecord]:
        refs = _sorted(leases)
        return self._fenced(
            self._db, COMPLETE, refs, {"now": now, "results": _results(refs, results)}
        )

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
        results: Mapping[JobId, str] | None = None,
    ) -> tuple[list[JobRecord], list[JobRecord]]:
        limited = self._queues.limited()
        if one_limited(leases, limit, types, queues, limited):
            assert queues is not None
            refs = _sorted(leases)
            params = {
                "ids": [r.job_id for r in refs],
                "tokens": [r.token for r in refs],
                "now": now,
                "results": _results(refs, results),
            }
            if queues[0] in self._queues.capped():
                capped = {**_claim_params(worker_id, limit, lease, types, queues, now), **params}
                both = self._db.statement(
                    lambda conn: _capped(conn, COMPLETE_AND_CLAIM_CAPPED, capped)
                )
                if both is not None:
                    done = [job_of(row) for row in both if row["vesper_done"]]
                    claimed = in_claim_order(
                        [job_of(row) for row in both if not row["vesper_done"]]
                    )
                    return done, claimed
                self._queues.forget()  # its settings changed: the completions were undone
            return self._queues.complete_and_claim(
                lambda conn: jobs_of(run(conn, COMPLETE, params)),
                queues[0],
                worker_id=worker_id,
                limit=limit,
                lease=lease,
                types=types,
                now=now,
            )
        if claims_apart(leases, limit, types, queues, limited):
            return complete_apart(
                self,
                leases,
                worker_id=worker_id,
                limit=limit,
                lease=lease,
                types=types,
                queues=queues,
                now=now,
                results=results,
            )
        refs = _sorted(leases)
        params = {
            **_claim_params(worker_id, limit, lease, types, queues, now),
            "ids": [r.job_id for r in refs],
            "tokens": [r.token for r in refs],
            "results": _results(refs, results),
        }
        statement = COMPLETES_AND_CLAIMS[_shape(types, queues)]
        rows = self._db.statement(lambda conn: run(conn, statement, params))
        done = [job_of(row) for row in rows if row["vesper_done"]]
        claimed = in_claim_order([job_of(row) for row in rows if not row["vesper_done"]])
        return done, claimed

    def fail(self, failures: Sequence[Failure], *, now: datetime | None = None) -> list[JobRecord]:
        ordered = sorted(failures, key=lambda f: f.lease.job_id)
        extra = {
            "now": now,
            "errors": [_text(f.error) for f in ordered],
            "delays": [f.retry_delay for f in ordered],
        }
        return self._fenced(self._db, FAIL, [f.lease for f in ordered], extra)

    def renew(
        self, leases: Sequence[LeaseRef], *, lease: timedelta, now: datetime | None = None
    ) -> list[JobRecord]:
        params = {"now": now, "lease": lease}
        return self._fenced(self._beat, RENEW, _sorted(leases), params)

    def release(
        self, leases: Sequence[LeaseRef], *, now: datetime | None = None
    ) -> list[JobRecord]:
        released = self._fenced(self._db, RELEASE, _sorted(leases), {"now": now})
        if released:
            self._db.statement(lambda conn: run(conn, NOTIFY))
        return released

    def snooze(self, snoozes: Sequence[Snoozed], *, now: datetime | None = None) -> list[JobRecord]:
        ordered = sorted(snoozes, key=lambda s: s.lease.job_id)
        extra = {"now": now, "delays": [s.delay for s in ordered]}
        return self._fenced(self._db, SNOOZE, [s.lease for s in ordered], extra)

    def _active_holders(
        self, conn: Connection, slots: Sequence[UniqueSlot]
    ) -> dict[UniqueSlot, JobRecord]:
        # planned for its keys each time: a bulk retry makes thousands of jobs active
        # faster than statistics follow, and a cached generic plan then read every
        # active job through the status index (4 s a batch at 100,000 jobs)
        holders = run(conn, ACTIVE_HOLDERS, holder_params(slots), prepare=False)
        return active_holders(holders)

    def _locked(self, picked: Select[Any]) -> Select[Any]:
        # the batch's rows stay locked until its UPDATE commits; SKIP LOCKED: a row a
        # claim or an outcome is changing right now is left to it
        return picked.with_for_update(skip_locked=True)

    def _bulk_changed(self, action: BulkAction, count: int) -> None:
        if count:  # retried jobs wake workers; cancelled ones, their waiters
            note = NOTIFY if action is BulkAction.RETRY else NOTIFY_FINISHED
            self._db.statement(lambda conn: run(conn, note))

    def expire(
        self, *, worker_ids: Sequence[str] = (), now: datetime | None = None
    ) -> list[JobRecord]:
        params = {"now": now, "worker_ids": list(worker_ids), "error": LEASE_EXPIRED_ERROR}
        ended = jobs_of(self._db.statement(lambda conn: run(conn, EXPIRE, params)))
        if ended:
            self._db.statement(lambda conn: run(conn, NOTIFY))
        if any(job.finished_at is not None for job in ended):  # some went to dlq
            self._db.statement(lambda conn: run(conn, NOTIFY_FINISHED))
        return ended

    def _changed(self, action: str, job: JobRecord) -> None:
        if action == "retry":
            self._db.statement(lambda conn: run(conn, NOTIFY))
        elif action == "cancel" and job.status is Status.CANCELLED:  # its waiters look
            self._db.statement(lambda conn: run(conn, NOTIFY_FINISHED))

    def get_many(self, job_ids: Sequence[JobId]) -> list[JobRecord]:
        if not job_ids:
            return []
        params = {"ids": list(job_ids)}
        return jobs_of(self._db.read(lambda conn: run(conn, GET_MANY, params)))

    def prune(
        self,
        older_than: Mapping[Status, timedelta],
        *,
        limit: int,
        now: datetime | None = None,
    ) -> dict[Status, int]:
        check_ages(older_than)
        counts: dict[Status, int] = {}
        left = limit
        for status, age in older_than.items():  # one short transaction per status
            if left <= 0:
                break
            params = {"status": status.value, "age": age, "now": now, "limit": left}
            rows = self._statement(PRUNE, params)
            if rows:
                counts[status] = len(rows)
                left -= len(rows)
        return counts

    def _statement(self, statement: TextClause, params: dict[str, Any]) -> list[Any]:
        return self._db.statement(lambda conn: run(conn, statement, params))

    def _fenced(
        self, db: Database, statement: TextClause, refs: Sequence[LeaseRef], extra: dict[str, Any]
    ) -> list[JobRecord]:
        """Run a fenced batch update; the jobs it changed, in no particular order."""
        if not refs:
            return []
        params = {"ids": [r.job_id for r in refs], "tokens": [r.token for r in refs], **extra}
        return jobs_of(db.statement(lambda conn: run(conn, statement, params)))


def _capped(conn: Connection, statement: TextClause, params: dict[str, Any]) -> list[Any] | None:
    """`statement`'s rows, or None where vesper_claim_capped found the queue limited in
    other ways too (the statement was rolled back)."""
    try:
        return run(conn, statement, {"types": None, **params})
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == CAPPED_STALE:
            return None
        raise


def _claim_capped(
    conn: Connection,
    queue: str,
    worker_id: str,
    limit: int,
    lease: timedelta,
    types: Sequence[str] | None,
    now: datetime | None,
) -> list[JobRecord] | None:
    """SqlQueues' claim from a capped queue: vesper_claim_capped, one statement."""
    params = {
        **_claim_params(worker_id, limit, lease, types, [queue], now),
        "ids": [],
        "tokens": [],
    }
    rows = _capped(conn, CLAIM_CAPPED, params)
    return None if rows is None else in_claim_order(jobs_of(rows))


def _database_clock(conn: Connection) -> datetime:
    """The database's time now (not the transaction's start: a lock may have been awaited)."""
    moment = job_time(conn.execute(text("SELECT clock_timestamp()")).scalar_one())
    assert moment is not None
    return moment


def _shape(types: Sequence[str] | None, queues: Sequence[str] | None) -> ClaimShape:
    if queues is None:
        return types is not None, "all"
    return types is not None, "one" if len(set(queues)) == 1 else "many"


# A submission's statements as steps, to run on any connection: each step yields a
# statement with its parameters and whether its rows come as tuples (else as mappings),
# is sent the rows, and the steps return the results. The store runs them on its pooled
# connection (`run_steps`); `submit_in` on the caller's (caller.py).
SqlSteps = Generator[tuple[TextClause, dict[str, Any], bool], list[Any], T]


def _insert_for(plan: SubmitPlan, now: datetime | None) -> tuple[TextClause, dict[str, Any]]:
    """The INSERT for `plan` and its parameters."""
    if len(plan.unique) == 1:
        # the one job is inserted or replayed whole, NOTIFY included: one statement
        return INSERT_ONE_NOTIFY, _insert_one_params(plan.unique[0], now)
    params = _insert_params(plan.unique, now)
    if all(n.idempotency_key is None and n.unique_key is None for n in plan.unique):
        return INSERT_NOTIFY, params  # every job is new (no keys): one statement too
    return INSERT, params


def submission(
    plan: SubmitPlan, insert: TextClause, params: dict[str, Any]
) -> SqlSteps[list[Submitted]]:
    """Insert `plan`'s jobs, read the jobs their keys are bound to or that hold their
    unique keys, NOTIFY: as steps."""
    by_id = {n.id: n for n in plan.unique}
    rows = yield insert, params, True
    created = {
        job_id: _created(by_id[job_id], seq=seq, run_at=run_at, created_at=created_at)
        for job_id, seq, run_at, created_at in rows
    }
    # keys already bound (by earlier calls, or by concurrent ones that ON CONFLICT
    # waited for): READ COMMITTED lets this new statement see them
    keys = [
        n.idempotency_key
        for n in plan.unique
        if n.id not in created and n.idempotency_key is not None
    ]
    bound: dict[str, JobRecord] = {}
    if keys:
        for row in (yield BOUND, {"keys": keys}, False):
            job = job_of(row)
            assert job.idempotency_key is not None
            bound[job.idempotency_key] = job
    active = yield from _holders(plan, created, bound, params.get("now"))
    # raises IdempotencyConflict: rolls back
    results = assemble(plan, created, bound, active)
    if created and insert is INSERT:
        yield NOTIFY, {}, False  # delivered at commit
    return results


def _holders(
    plan: SubmitPlan,
    created: dict[Any, JobRecord],
    bound: dict[str, JobRecord],
    now: datetime | None,
) -> SqlSteps[dict[UniqueSlot, JobRecord]]:
    """The active jobs holding the (queue, unique key) slots of the jobs not inserted (no
    bound idempotency key explains them), as steps. A holder that finished before it
    could be read freed its key: such a job is inserted again (adding to `created`)."""
    active: dict[UniqueSlot, JobRecord] = {}
    for _ in range(_UNIQUE_RACES):
        left = [
            n
            for n in plan.unique
            if n.id not in created
            and n.unique_slot is not None
            and n.idempotency_key not in bound
            and n.unique_slot not in active
        ]
        if not left:
            return active
        slots = [n.unique_slot for n in left if n.unique_slot is not None]
        active |= active_holders((yield ACTIVE_HOLDERS, holder_params(slots), False))
        again = [n for n in left if n.unique_slot not in active]
        if not again:
            return active
        rows = yield INSERT, _insert_params(again, now), True
        by_id = {n.id: n for n in again}
        for job_id, seq, run_at, created_at in rows:
            created[job_id] = _created(by_id[job_id], seq=seq, run_at=run_at, created_at=created_at)
    return active


def run_steps(conn: Connection, steps: SqlSteps[T]) -> T:
    """Run `steps` on the driver's connection under `conn` (the store's own)."""
    try:
        statement, params, tuples = next(steps)
        while True:
            rows = run(conn, statement, params, row_factory=tuple_row if tuples else dict_row)
            statement, params, tuples = steps.send(rows)
    except StopIteration as done:
        result: T = done.value
        return result


def _claim_params(
    worker_id: str,
    limit: int,
    lease: timedelta,
    types: Sequence[str] | None,
    queues: Sequence[str] | None,
    now: datetime | None,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "now": now,
        "limit": limit,
        "worker_id": worker_id,
        "token": uuid.uuid4(),  # one per call, shared by the batch: the fence is (job id, token)
        "lease": lease,
    }
    if types is not None:
        params["types"] = list(types)
    if queues is not None:
        params["queue"] = queues[0]
        params["queues"] = list(queues)
    return params


def _results(
    refs: Sequence[LeaseRef], results: Mapping[JobId, str] | None
) -> list[str | None] | None:
    """The results' JSON texts in the order of `refs`; None (one NULL array) for none."""
    if not results:
        return None
    return [results.get(ref.job_id) for ref in refs]


def _sorted(leases: Sequence[LeaseRef]) -> list[LeaseRef]:
    # a deterministic order makes deadlocks between two batches sharing jobs (a renewal
    # and a completion of one worker) rare; Database retries the ones that still happen
    return sorted(leases, key=lambda ref: ref.job_id)


def _created(new: NewJob, *, seq: int, run_at: datetime, created_at: datetime) -> JobRecord:
    """The job `new` became: what was sent, and what the store set (seq, times)."""
    at = job_time(created_at)
    assert at is not None
    job = new.materialize(now=at, seq=seq)
    due = job_time(run_at)
    assert due is not None
    return job if job.run_at == due else attrs.evolve(job, run_at=due)


def _payload_text(new: NewJob) -> str:
    """The payload's JSON text: the one `prepare` made, else a fresh one."""
    if new.payload_json is not None:
        return new.payload_json
    return json.dumps(new.payload, separators=(",", ":"))


_GETTERS = {name: attrgetter(name) for name in SUPPLIED if name != "payload"}


def _insert_one_params(new: NewJob, now: datetime | None) -> dict[str, Any]:
    params = {name: get(new) for name, get in _GETTERS.items()}
    params["payload"] = _payload_text(new)
    params["now"] = now
    return params


def _insert_params(batch: Sequence[NewJob], now: datetime | None) -> dict[str, Any]:
    params: dict[str, Any] = {"now": now}
    for name, get in _GETTERS.items():
        values = list(map(get, batch))
        if name in BLANK and values.count(BLANK[name]) == len(values):
            params[name] = None  # unset for the whole batch: one NULL array
        else:
            params[name] = values
    # ASCII-escaped JSON text: `json` keeps it verbatim, "\u0000" and lone surrogates too
    params["payload"] = [_payload_text(n) for n in batch]
    return params
