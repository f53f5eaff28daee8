"""The PostgreSQL job repository: one statement per call on the hot path.

The statements, and how they run on the driver's own connection, are in
postgres_statements.py.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

import attrs
from psycopg.rows import tuple_row
from sqlalchemy import DateTime, bindparam, cast, func, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import TextClause

from vesper.adapters.sql.common import (
    SqlJobReads,
    SubmitPlan,
    assemble,
    job_time,
    plan_submission,
)
from vesper.adapters.sql.engines import Database
from vesper.adapters.sql.postgres_statements import (
    BLANK,
    BOUND,
    CLAIM,
    CLAIMS,
    COMPLETE,
    COMPLETES_AND_CLAIMS,
    EXPIRE,
    FAIL,
    INSERT,
    INSERT_NOTIFY,
    INSERT_ONE_NOTIFY,
    NOTIFY,
    RELEASE,
    RENEW,
    SUPPLIED,
    ClaimShape,
    run,
)
from vesper.adapters.sql.queues import SqlQueues
from vesper.adapters.sql.rows import in_claim_order, job_of, jobs_of
from vesper.adapters.sql.tables import utc_datetime
from vesper.application.ports import Capabilities, Submitted
from vesper.domain.job import LEASE_EXPIRED_ERROR, Failure, JobRecord, LeaseRef
from vesper.domain.queues import QueueChange, QueueSettings, QueueState
from vesper.domain.submission import NewJob

__all__ = ["CLAIM", "PostgresJobRepository"]  # CLAIM: the fault matrix EXPLAINs it (R15)

CLOCK = text("SELECT statement_timestamp()")
log = logging.getLogger("vesper.store")


def now_expression() -> Any:
    """`COALESCE(:now, statement_timestamp())` as a SQLAlchemy expression."""
    return func.coalesce(
        cast(bindparam("now", type_=utc_datetime()), DateTime(timezone=True)),
        func.statement_timestamp(),
    )


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; an error message is the one free text that may
    return value.replace("\x00", "\ufffd")


class PostgresJobRepository(SqlJobReads):
    """Jobs in PostgreSQL: any number of processes on any number of machines."""

    capabilities = Capabilities(multi_process=True, complete_and_claim=True, queues=True)

    def __init__(self, db: Database, *, beat: Database | None = None) -> None:
        super().__init__(db, now_expression())
        self._beat = beat or db  # lease renewal gets its own pool: a busy one cannot starve it
        self._queues = SqlQueues(db, clock=_database_clock, notify=lambda conn: run(conn, NOTIFY))

    def now(self) -> datetime:
        value = self._db.read(lambda conn: conn.execute(CLOCK).scalar_one())
        moment = job_time(value)
        assert moment is not None
        return moment

    def submit(self, jobs: Sequence[NewJob], *, now: datetime | None = None) -> list[Submitted]:
        if not jobs:
            return []
        plan = plan_submission(jobs)
        if len(plan.unique) == 1:
            # the one job is inserted or replayed whole: all or nothing in one statement,
            # which a durable session commits in its own round trip
            one = _insert_one_params(plan.unique[0], now)
            return self._db.durable_statement(
                lambda conn: self._submit(conn, plan, one, INSERT_ONE_NOTIFY)
            )
        params = _insert_params(plan.unique, now)
        if all(n.idempotency_key is None for n in plan.unique):
            # every job is new (no keys): all or nothing holds with one statement too
            return self._db.durable_statement(
                lambda conn: self._submit(conn, plan, params, INSERT_NOTIFY)
            )
        return self._db.transaction(
            lambda conn: self._submit(conn, plan, params, INSERT), durable=True
        )

    def _submit(
        self, conn: Connection, plan: SubmitPlan, params: dict[str, Any], insert: TextClause
    ) -> list[Submitted]:
        by_id = {n.id: n for n in plan.unique}
        created = {
            job_id: _created(by_id[job_id], seq=seq, run_at=run_at, created_at=created_at)
            for job_id, seq, run_at, created_at in run(conn, insert, params, row_factory=tuple_row)
        }
        # keys already bound (by earlier calls, or by concurrent ones that ON CONFLICT
        # waited for): READ COMMITTED lets this new statement see them
        keys = [n.idempotency_key for n in plan.unique if n.id not in created]
        bound: dict[str, JobRecord] = {}
        if keys:
            for row in run(conn, BOUND, {"keys": keys}):
                job = job_of(row)
                assert job.idempotency_key is not None
                bound[job.idempotency_key] = job
        results = assemble(plan, created, bound)  # raises IdempotencyConflict: rolls back
        if created and insert is INSERT:
            run(conn, NOTIFY)  # delivered at commit
        return results

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
        claimed: list[JobRecord] = []
        if queues is None or not limited.issuperset(queues):
            params = _claim_params(worker_id, limit, lease, types, queues, now)
            statement = CLAIMS[_shape(types, queues)]
            rows = self._db.statement(lambda conn: run(conn, statement, params))
            claimed = in_claim_order(jobs_of(rows))
        return claimed + self._claim_limited(
            limited, worker_id, limit - len(claimed), lease, types, queues, now
        )

    def _claim_limited(
        self,
        limited: frozenset[str],
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None,
        queues: Sequence[str] | None,
        now: datetime | None,
    ) -> list[JobRecord]:
        """Claims from the limited queues among `queues`, each in its own transaction."""
        claimed: list[JobRecord] = []
        for name in sorted(limited if queues is None else limited.intersection(queues)):
            if len(claimed) >= limit:
                break
            claimed += self._queues.claim(
                name,
                worker_id=worker_id,
                limit=limit - len(claimed),
                lease=lease,
                types=types,
                now=now,
            )
        return claimed

    def complete(
        self, leases: Sequence[LeaseRef], *, now: datetime | None = None
    ) -> list[JobRecord]:
        return self._fenced(self._db, COMPLETE, _sorted(leases), {"now": now})

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
        limited = self._queues.limited()
        if (
            not leases
            or limit <= 0
            or (types is not None and not types)
            or (queues is not None and (not queues or limited.issuperset(queues)))
        ):
            completed = self.complete(leases, now=now)
            claimed = self.claim(
                worker_id=worker_id, limit=limit, lease=lease, types=types, queues=queues, now=now
            )
            return completed, claimed
        refs = _sorted(leases)
        params = {
            **_claim_params(worker_id, limit, lease, types, queues, now),
            "ids": [r.job_id for r in refs],
            "tokens": [r.token for r in refs],
        }
        statement = COMPLETES_AND_CLAIMS[_shape(types, queues)]
        rows = self._db.statement(lambda conn: run(conn, statement, params))
        done = [job_of(row) for row in rows if row["vesper_done"]]
        claimed = in_claim_order([job_of(row) for row in rows if not row["vesper_done"]])
        try:
            # the completions are committed: an error past here must not reach a caller
            # that would retry them (it claims on its own instead)
            claimed += self._claim_limited(
                limited, worker_id, limit - len(claimed), lease, types, queues, now
            )
        except Exception as exc:
            log.warning("claim from limited queues failed after completing a batch: %s", exc)
        return done, claimed

    def queue_settings(self) -> list[QueueSettings]:
        return self._queues.settings()

    def configure_queue(
        self, name: str, change: QueueChange, *, now: datetime | None = None
    ) -> QueueSettings:
        return self._queues.configure(name, change, now=now)

    def queue_states(self, *, now: datetime | None = None) -> list[QueueState]:
        return self._queues.states(now=now)

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

    def expire(
        self, *, worker_ids: Sequence[str] = (), now: datetime | None = None
    ) -> list[JobRecord]:
        params = {"now": now, "worker_ids": list(worker_ids), "error": LEASE_EXPIRED_ERROR}
        ended = jobs_of(self._db.statement(lambda conn: run(conn, EXPIRE, params)))
        if ended:
            self._db.statement(lambda conn: run(conn, NOTIFY))
        return ended

    def _changed(self, action: str, job: JobRecord) -> None:
        if action == "retry":
            self._db.statement(lambda conn: run(conn, NOTIFY))

    def _fenced(
        self, db: Database, statement: TextClause, refs: Sequence[LeaseRef], extra: dict[str, Any]
    ) -> list[JobRecord]:
        """Run a fenced batch update; the jobs it changed, in no particular order."""
        if not refs:
            return []
        params = {"ids": [r.job_id for r in refs], "tokens": [r.token for r in refs], **extra}
        return jobs_of(db.statement(lambda conn: run(conn, statement, params)))


def _database_clock(conn: Connection) -> datetime:
    """The database's time now (not the transaction's start: a lock may have been awaited)."""
    moment = job_time(conn.execute(text("SELECT clock_timestamp()")).scalar_one())
    assert moment is not None
    return moment


def _shape(types: Sequence[str] | None, queues: Sequence[str] | None) -> ClaimShape:
    if queues is None:
        return types is not None, "all"
    return types is not None, "one" if len(set(queues)) == 1 else "many"


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
