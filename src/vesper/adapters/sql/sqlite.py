"""The SQLite job repository: one machine, any number of processes sharing one file.

Every write runs inside BEGIN IMMEDIATE (see engines.py), so writers queue on SQLite's
write lock instead of racing; a claim is one UPDATE ... WHERE id IN (SELECT ... LIMIT n)
RETURNING. Time is the injected clock's (host time), always bound as a parameter, and
date arithmetic happens in Python: SQLite stores times as text.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    TextualSelect,
    Uuid,
    bindparam,
    text,
)
from sqlalchemy.engine import Connection

from vesper.adapters.clock import SystemClock
from vesper.adapters.sql import caller
from vesper.adapters.sql.engines import Database
from vesper.adapters.sqlcore.common import (
    SqlJobReads,
    SubmitPlan,
    plan_submission,
    submit_serialized,
)
from vesper.adapters.sqlcore.leases import (
    COMPLETE,
    NOW,
    FencedWrites,
    complete_with_results,
    fenced_params,
)
from vesper.adapters.sqlcore.queues import (
    NOT_LIMITED_SQL,
    SqlQueueing,
    SqlQueues,
    claims_apart,
    complete_apart,
    one_limited,
)
from vesper.adapters.sqlcore.retention import SqlPruning, prune_statement
from vesper.adapters.sqlcore.rows import in_claim_order, jobs_of
from vesper.adapters.sqlcore.tables import CLAIMABLE_SQL, jobs, utc_datetime
from vesper.application.ports import Capabilities, Clock, Submitted
from vesper.domain.bulk import BulkAction
from vesper.domain.job import JobId, JobRecord, LeaseRef
from vesper.domain.submission import NewJob

# INDEXED BY: without statistics SQLite may prefer (status, seq) and sort every claimable
# row; the partial claim index yields them in claim order, so LIMIT stops early
_CLAIM = """
UPDATE vesper_jobs
SET status = 'processing', attempts = attempts + 1, worker_id = :b_worker_id,
    lease_token = :token, lease_expires_at = :expires_at, started_at = :now, updated_at = :now
WHERE id IN (
    SELECT id FROM vesper_jobs INDEXED BY {index}
    WHERE {claimable} AND run_at <= :now {types} {queues} AND {not_limited}
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
# a write that changes nothing: SQLite takes the write lock for it (an UPDATE starts a
# write transaction whatever its WHERE)
WRITE_LOCK = text("UPDATE vesper_jobs SET seq = seq WHERE 0")


class SqliteJobRepository(SqlQueueing, FencedWrites, SqlPruning, SqlJobReads):
    """Jobs in one SQLite file, shared by the processes of one machine."""

    capabilities = Capabilities(
        multi_process=True,
        complete_and_claim=True,
        transactional_submit=True,
        activity=True,
        summary=True,
        queues=True,
    )
    # without statistics SQLite may not pick the partial index of finished jobs
    _prune = prune_statement("vesper_jobs INDEXED BY vesper_jobs_finished_idx")

    def __init__(
        self,
        db: Database,
        clock: Clock | None = None,
        *,
        notify: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(db, NOW)
        self._clock = clock or SystemClock()
        host = self._clock
        self._queues = SqlQueues(db, clock=lambda _: host.now())
        # the notifier's publish (other processes' workers wake), called after a commit
        # that made jobs due: SQLite has no NOTIFY
        self._notify = notify or (lambda: None)

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
        results = self._db.transaction(lambda conn: submit_serialized(conn, plan, self._at(now)))
        if any(result.created for result in results):
            self._notify()
        return results

    def _changed(self, action: str, job: JobRecord) -> None:
        if action == "retry":
            self._notify()

    def _made_due(self, jobs: list[JobRecord]) -> None:
        self._notify()  # released or expired: claimable again

    def _bulk_changed(self, action: BulkAction, count: int) -> None:
        if count and action is BulkAction.RETRY:
            self._notify()  # retried jobs are claimable

    # -- in the caller's transaction (TransactionalJobRepository) --------------------------

    def is_async(self, connection: object) -> bool:
        return caller.kind_of(connection, database="sqlite") == "sqlalchemy_async"

    def submit_in(self, connection: object, jobs: Sequence[NewJob]) -> list[Submitted]:
        if self.is_async(connection):
            raise TypeError("connection: an asyncio connection: use submit_in_async")
        if not jobs:
            return []
        plan = plan_submission(jobs)
        results = self._submit_in(caller.sqlalchemy_connection(connection), plan)
        return self._notify_at_commit(connection, results)

    async def submit_in_async(self, connection: object, jobs: Sequence[NewJob]) -> list[Submitted]:
        if not self.is_async(connection):
            raise TypeError("connection: not an asyncio connection: use submit_in")
        if not jobs:
            return []
        plan = plan_submission(jobs)
        results = await caller.run_async(connection, lambda conn: self._submit_in(conn, plan))
        return self._notify_at_commit(connection, results)

    def _notify_at_commit(self, connection: object, results: list[Submitted]) -> list[Submitted]:
        """Other processes' workers wake when the caller commits (as after `submit`)."""
        if any(result.created for result in results):
            caller.after_commit(connection, self._notify)
        return results

    def _submit_in(self, conn: Connection, plan: SubmitPlan) -> list[Submitted]:
        # The caller's transaction may have begun deferred (pysqlite's default): take the
        # write lock first, as the store's BEGIN IMMEDIATE does, so that no other writer
        # binds a key or takes a seq between the reads of submit_serialized and its
        # INSERT. A transaction that read before a concurrent commit fails here, with
        # SQLite's "database is locked", rather than insert on a stale view.
        conn.execute(WRITE_LOCK)
        return submit_serialized(conn, plan, self._at(None))

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
        def work(conn: Connection) -> Any:
            at = self._at(now)
            statement, params = _claim_params(worker_id, limit, lease, types, queues, at)
            return conn.execute(statement, params).all()

        return in_claim_order(jobs_of(self._db.statement(work)))

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

            def complete(conn: Connection) -> list[JobRecord]:
                at = self._at(now)
                if results:
                    return complete_with_results(conn, leases, results, at)
                return jobs_of(conn.execute(COMPLETE, fenced_params(leases, {"now": at})).all())

            return self._queues.complete_and_claim(
                complete,
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

        # one write transaction: one commit (one WAL sync) for the batch and the next
        def work(conn: Connection) -> tuple[list[JobRecord], list[JobRecord]]:
            at = self._at(now)
            statement, params = _claim_params(worker_id, limit, lease, types, queues, at)
            if results:
                done = complete_with_results(conn, leases, results, at)
            else:
                done = jobs_of(conn.execute(COMPLETE, fenced_params(leases, {"now": at})).all())
            return done, jobs_of(conn.execute(statement, params).all())

        done, claimed = self._db.transaction(work)
        return done, in_claim_order(claimed)


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
