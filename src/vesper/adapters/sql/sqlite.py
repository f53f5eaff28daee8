"""The SQLite job repository: one machine, any number of processes sharing one file.

Every write runs inside BEGIN IMMEDIATE (see engines.py), so writers queue on SQLite's
write lock instead of racing; a claim is one UPDATE ... WHERE id IN (SELECT ... LIMIT n)
RETURNING. Time is the injected clock's (host time), always bound as a parameter, and
date arithmetic happens in Python: SQLite stores times as text.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    Boolean,
    TextualSelect,
    Uuid,
    and_,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection

from vesper.adapters.clock import SystemClock
from vesper.adapters.sql.common import SqlJobReads, SubmitPlan, assemble, plan_submission
from vesper.adapters.sql.engines import Database
from vesper.adapters.sql.queues import NOT_LIMITED_SQL, SqlQueues
from vesper.adapters.sql.rows import in_claim_order, job_of, jobs_of, row_of
from vesper.adapters.sql.tables import CLAIMABLE_SQL, PROCESSING_SQL, jobs, utc_datetime
from vesper.application.ports import Capabilities, Clock, Submitted
from vesper.domain.job import LEASE_EXPIRED_ERROR, Failure, JobId, JobRecord, LeaseRef
from vesper.domain.queues import QueueChange, QueueSettings, QueueState
from vesper.domain.states import Status
from vesper.domain.submission import NewJob

NOW = bindparam("now", type_=utc_datetime())
log = logging.getLogger("vesper.store")
_LEASE_CLEARED: dict[str, Any] = {"worker_id": None, "lease_token": None, "lease_expires_at": None}

# INDEXED BY: without statistics SQLite may prefer (status, seq) and sort every claimable
# row; the partial claim index yields them in claim order, so LIMIT stops early
_CLAIM = """
UPDATE vesper_jobs
SET status = 'processing', attempts = attempts + 1, worker_id = :b_worker_id,
    lease_token = :token, lease_expires_at = :expires_at, started_at = :now, updated_at = :now
WHERE id IN (
    SELECT id FROM vesper_jobs INDEXED BY {index}
    WHERE {claimable} AND run_at <= :now {types} {queues} {not_limited}
    ORDER BY priority DESC, run_at, seq
    LIMIT :limit
)
RETURNING *
"""


def _claim(typed: bool, queues: str) -> TextualSelect:
    extra: list[BindParameter[Any]] = [bindparam("types", expanding=True)] if typed else []
    if queues == "many":
        extra.append(bindparam("queues", expanding=True))
    return (
        text(
            _CLAIM.format(
                claimable=CLAIMABLE_SQL,
                # one queue: its own index, in claim order
                index="vesper_jobs_queue_claim_idx" if queues == "one" else "vesper_jobs_claim_idx",
                types="AND type IN :types" if typed else "",
                queues=_QUEUES[queues],
                not_limited=NOT_LIMITED_SQL,
            )
        )
        .bindparams(
            bindparam("now", type_=utc_datetime()),
            bindparam("expires_at", type_=utc_datetime()),
            bindparam("token", type_=Uuid()),
            *extra,
        )
        .columns(*jobs.c)
    )


_QUEUES = {"all": "", "one": "AND queue = :queue", "many": "AND queue IN :queues"}
CLAIMS = {(typed, q): _claim(typed, q) for typed in (False, True) for q in _QUEUES}

# fencing: only the current, unexpired lease of a processing job changes it
_FENCE = and_(
    jobs.c.id.in_(bindparam("ids", expanding=True)),  # leads the planner to the primary key
    tuple_(jobs.c.id, jobs.c.lease_token).in_(bindparam("refs", expanding=True)),
    text(PROCESSING_SQL),
    jobs.c.lease_expires_at > NOW,
)


def _fenced(**values: Any) -> Any:
    return update(jobs).where(_FENCE).values(**values).returning(*jobs.c)


COMPLETE = _fenced(status=Status.DONE.value, updated_at=NOW, finished_at=NOW, **_LEASE_CLEARED)
RELEASE = _fenced(
    status=Status.PENDING.value,
    attempts=func.max(jobs.c.attempts - 1, 0),
    started_at=None,
    updated_at=NOW,
    **_LEASE_CLEARED,
)
RENEW = _fenced(lease_expires_at=bindparam("expires_at"), updated_at=NOW)

_retrying = and_(bindparam("retryable", type_=Boolean()), jobs.c.retries < jobs.c.max_retries)
FAIL = (
    update(jobs)
    .where(
        jobs.c.id == bindparam("job_id"),
        jobs.c.lease_token == bindparam("token"),
        text(PROCESSING_SQL),
        jobs.c.lease_expires_at > NOW,
    )
    .values(
        status=case((_retrying, Status.FAILED.value), else_=Status.DLQ.value),
        retries=case((_retrying, jobs.c.retries + 1), else_=jobs.c.retries),
        run_at=case((_retrying, bindparam("retry_at", type_=utc_datetime())), else_=jobs.c.run_at),
        finished_at=case((_retrying, jobs.c.finished_at), else_=NOW),
        error=bindparam("b_error"),
        updated_at=NOW,
        **_LEASE_CLEARED,
    )
    .returning(*jobs.c)
)

_retry_left = jobs.c.retries < jobs.c.max_retries
EXPIRE = (
    update(jobs)
    .where(
        text(PROCESSING_SQL),
        or_(
            jobs.c.lease_expires_at <= NOW,
            jobs.c.worker_id.in_(bindparam("worker_ids", expanding=True)),
        ),
    )
    .values(
        status=case((_retry_left, Status.FAILED.value), else_=Status.DLQ.value),
        retries=case((_retry_left, jobs.c.retries + 1), else_=jobs.c.retries),
        finished_at=case((_retry_left, jobs.c.finished_at), else_=NOW),
        error=bindparam("b_error"),
        updated_at=NOW,
        **_LEASE_CLEARED,
    )
    .returning(*jobs.c)
)

BOUND = select(jobs).where(jobs.c.idempotency_key.in_(bindparam("keys", expanding=True)))
LAST_SEQ = select(func.coalesce(func.max(jobs.c.seq), 0))
INSERT = insert(jobs)


class SqliteJobRepository(SqlJobReads):
    """Jobs in one SQLite file, shared by the processes of one machine."""

    capabilities = Capabilities(multi_process=True, complete_and_claim=True, queues=True)

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        super().__init__(db, NOW)
        self._clock = clock or SystemClock()
        host = self._clock
        self._queues = SqlQueues(db, clock=lambda _: host.now())

    def now(self) -> datetime:
        return self._clock.now()

    def _at(self, now: datetime | None) -> datetime:
        return now or self._clock.now()

    def submit(self, jobs: Sequence[NewJob], *, now: datetime | None = None) -> list[Submitted]:
        if not jobs:
            return []
        plan = plan_submission(jobs)
        # the time is read once the write lock is held (here and in every write that
        # stamps a time): a writer that waited for the lock must not date its rows, or
        # start a lease, in the past; `seq` and `run_at` then grow together too
        return self._db.transaction(lambda conn: self._submit(conn, plan, self._at(now)))

    def _submit(self, conn: Connection, plan: SubmitPlan, at: datetime) -> list[Submitted]:
        # the write lock is held from BEGIN IMMEDIATE: nobody binds a key meanwhile
        keys = [n.idempotency_key for n in plan.unique if n.idempotency_key is not None]
        bound: dict[str, JobRecord] = {}
        if keys:
            for row in conn.execute(BOUND, {"keys": keys}):
                job = job_of(row)
                assert job.idempotency_key is not None
                bound[job.idempotency_key] = job
        fresh = [
            n for n in plan.unique if n.idempotency_key not in bound or n.idempotency_key is None
        ]
        seq = conn.execute(LAST_SEQ).scalar_one()
        created: dict[JobId, JobRecord] = {}
        for offset, new in enumerate(fresh, start=1):
            created[new.id] = new.materialize(now=at, seq=seq + offset)
        results = assemble(plan, created, bound)  # raises IdempotencyConflict: rolls back
        if created:
            conn.execute(INSERT, [row_of(job) for job in created.values()])
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

            def work(conn: Connection) -> Any:
                statement, params = _claim_params(
                    worker_id, limit, lease, types, queues, self._at(now)
                )
                return conn.execute(statement, params).all()

            claimed = in_claim_order(jobs_of(self._db.statement(work)))
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
        return self._fenced(COMPLETE, leases, lambda: {"now": self._at(now)})

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
            or (queues is not None and not queues)
            or limited.intersection(queues if queues is not None else limited)
        ):
            # a limited queue's claim is a transaction of its own: complete first
            completed = self.complete(leases, now=now)
            if not completed and leases:
                return completed, []
            try:
                claimed = self.claim(
                    worker_id=worker_id,
                    limit=limit,
                    lease=lease,
                    types=types,
                    queues=queues,
                    now=now,
                )
            except Exception as exc:  # the completions are committed: never retried
                if not leases:
                    raise
                log.warning("claim failed after completing a batch: %s", exc)
                claimed = []
            return completed, claimed

        # one write transaction: one commit (one WAL sync) for the batch and the next
        def work(conn: Connection) -> tuple[list[JobRecord], list[JobRecord]]:
            at = self._at(now)
            fenced = _fenced_params(leases, {"now": at})
            statement, params = _claim_params(worker_id, limit, lease, types, queues, at)
            done = jobs_of(conn.execute(COMPLETE, fenced).all())
            return done, jobs_of(conn.execute(statement, params).all())

        done, claimed = self._db.transaction(work)
        return done, in_claim_order(claimed)

    def queue_settings(self) -> list[QueueSettings]:
        return self._queues.settings()

    def configure_queue(
        self, name: str, change: QueueChange, *, now: datetime | None = None
    ) -> QueueSettings:
        return self._queues.configure(name, change, now=now)

    def queue_states(self, *, now: datetime | None = None) -> list[QueueState]:
        return self._queues.states(now=now)

    def renew(
        self, leases: Sequence[LeaseRef], *, lease: timedelta, now: datetime | None = None
    ) -> list[JobRecord]:
        def params() -> dict[str, Any]:
            at = self._at(now)
            return {"now": at, "expires_at": at + lease}

        return self._fenced(RENEW, leases, params)

    def release(
        self, leases: Sequence[LeaseRef], *, now: datetime | None = None
    ) -> list[JobRecord]:
        return self._fenced(RELEASE, leases, lambda: {"now": self._at(now)})

    def fail(self, failures: Sequence[Failure], *, now: datetime | None = None) -> list[JobRecord]:
        if not failures:
            return []

        def work(conn: Connection) -> list[JobRecord]:
            at = self._at(now)
            params = [
                {
                    "now": at,
                    "job_id": f.lease.job_id,
                    "token": f.lease.token,
                    "b_error": f.error,
                    "retryable": f.retry_delay is not None,
                    "retry_at": at + f.retry_delay if f.retry_delay is not None else at,
                }
                for f in failures
            ]
            # each failure has its own error and delay: one UPDATE each, one transaction
            rows = [conn.execute(FAIL, p).first() for p in params]
            return [job_of(row) for row in rows if row is not None]

        return self._db.transaction(work)

    def expire(
        self, *, worker_ids: Sequence[str] = (), now: datetime | None = None
    ) -> list[JobRecord]:

        def work(conn: Connection) -> Any:
            params = {
                "now": self._at(now),
                "worker_ids": list(worker_ids),
                "b_error": LEASE_EXPIRED_ERROR,
            }
            return conn.execute(EXPIRE, params).all()

        return jobs_of(self._db.statement(work))

    def _fenced(
        self,
        statement: Any,
        leases: Sequence[LeaseRef],
        params: Callable[[], dict[str, Any]],
    ) -> list[JobRecord]:
        """`statement` for `leases`, its parameters made under the write lock."""
        if not leases:
            return []
        rows = self._db.statement(
            lambda conn: conn.execute(statement, _fenced_params(leases, params())).all()
        )
        return jobs_of(rows)


def _fenced_params(leases: Sequence[LeaseRef], params: dict[str, Any]) -> dict[str, Any]:
    return {
        **params,
        "ids": [ref.job_id for ref in leases],
        "refs": [(ref.job_id, ref.token) for ref in leases],
    }


def _claim_params(
    worker_id: str,
    limit: int,
    lease: timedelta,
    types: Sequence[str] | None,
    queues: Sequence[str] | None,
    at: datetime,
) -> tuple[Any, dict[str, Any]]:
    """The claim statement and its parameters (a fresh lease token per call, shared by
    the batch)."""
    params: dict[str, Any] = {
        "now": at,
        "limit": limit,
        "b_worker_id": worker_id,
        "token": uuid.uuid4(),  # one per call: the fence is (job id, token)
        "expires_at": at + lease,
    }
    if types is not None:
        params["types"] = list(types)
    shape = "all"
    if queues is not None:
        shape = "one" if len(set(queues)) == 1 else "many"
        params["queue" if shape == "one" else "queues"] = (
            queues[0] if shape == "one" else list(queues)
        )
    return CLAIMS[types is not None, shape], params
