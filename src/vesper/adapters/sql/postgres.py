"""The PostgreSQL job repository: one statement per call on the hot path.

Time is the database's when `now` is None: every statement reads
`COALESCE(:now, statement_timestamp())`. statement_timestamp() (not clock_timestamp())
because it is one value for the whole statement, so started_at + lease equals
lease_expires_at exactly, and it is STABLE, so the planner may use it in index scans.
Batches travel as arrays (`unnest`): one round trip whatever the batch size.

The statements of the hot paths (submit, claim, the fenced updates) run on the driver's
own connection (`_rows`): SQLAlchemy's result set-up per call cost more than psycopg's
whole execution of a claim. psycopg prepares each of them after its prepare_threshold
executions on a connection, as it did under SQLAlchemy. Errors are wrapped as SQLAlchemy
wraps them, so Database's retries and StoreUnavailable mapping hold.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs
import psycopg
from psycopg.rows import RowFactory, dict_row, tuple_row
from sqlalchemy import DateTime, bindparam, cast, func, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import TextClause

from vesper.adapters.sql.common import (
    SqlJobReads,
    SubmitPlan,
    assemble,
    job_time,
    plan_submission,
)
from vesper.adapters.sql.engines import Database
from vesper.adapters.sql.notify import NOTIFY_SQL
from vesper.adapters.sql.rows import in_claim_order, in_order_of, job_of, jobs_of
from vesper.adapters.sql.tables import CLAIMABLE_SQL, utc_datetime
from vesper.application.ports import Capabilities, Submitted
from vesper.domain.job import LEASE_EXPIRED_ERROR, Failure, JobRecord, LeaseRef
from vesper.domain.submission import NewJob

NOW = "COALESCE(CAST(:now AS timestamptz), statement_timestamp())"

_PICKED = """picked AS MATERIALIZED (
    SELECT id FROM vesper_jobs
    WHERE {claimable} AND run_at <= {now} {types}
    ORDER BY priority DESC, run_at, seq
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)"""
_TAKE = """UPDATE vesper_jobs AS j
SET status = 'processing', attempts = j.attempts + 1, worker_id = :worker_id,
    lease_token = :token, lease_expires_at = {now} + CAST(:lease AS interval),
    started_at = {now}, updated_at = {now}
FROM picked WHERE j.id = picked.id
RETURNING j.*"""
_CLAIM = f"\nWITH {_PICKED}\n{_TAKE}\n"
_TYPES = "AND type = ANY(CAST(:types AS text[]))"
CLAIM = text(_CLAIM.format(claimable=CLAIMABLE_SQL, now=NOW, types=""))
CLAIM_TYPES = text(_CLAIM.format(claimable=CLAIMABLE_SQL, now=NOW, types=_TYPES))

# Fencing: only the current, unexpired lease of a processing job changes it. A lease token
# is set exactly while a job is processing (the vesper_jobs_lease_check constraint), so
# `lease_token = :token` implies the status; leaving `status = 'processing'` out keeps the
# partial indexes out of reach, and the planner, which underestimates how many jobs are
# processing, looks the batch's ids up by primary key instead of scanning all of them.
_FENCED = """
UPDATE vesper_jobs AS j SET {set}, worker_id = NULL, lease_token = NULL,
    lease_expires_at = NULL, updated_at = {now}
FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS uuid[]){more}) AS r(id, token{names})
WHERE j.id = ANY(CAST(:ids AS uuid[])) AND j.id = r.id AND j.lease_token = r.token
    AND j.lease_expires_at > {now}
RETURNING j.*
"""
COMPLETE = text(
    _FENCED.format(set=f"status = 'done', finished_at = {NOW}", now=NOW, more="", names="")
)
RELEASE = text(
    _FENCED.format(
        set="status = 'pending', attempts = GREATEST(j.attempts - 1, 0), started_at = NULL",
        now=NOW,
        more="",
        names="",
    )
)
_RETRYING = "r.delay IS NOT NULL AND j.retries < j.max_retries"
FAIL = text(
    _FENCED.format(
        set=(
            f"status = CASE WHEN {_RETRYING} THEN 'failed' ELSE 'dlq' END, "
            f"retries = j.retries + CASE WHEN {_RETRYING} THEN 1 ELSE 0 END, "
            f"run_at = CASE WHEN {_RETRYING} THEN {NOW} + r.delay ELSE j.run_at END, "
            f"finished_at = CASE WHEN {_RETRYING} THEN j.finished_at ELSE {NOW} END, "
            "error = r.error"
        ),
        now=NOW,
        more=", CAST(:errors AS text[]), CAST(:delays AS interval[])",
        names=", error, delay",
    )
)
# A worker's finished batch and its next claim, one statement (one round trip, one
# commit). The claim's snapshot sees the completed jobs as processing: never claimable.
_COMPLETE_AND_CLAIM = f"""
WITH done AS ({{done}}),
{_PICKED},
claimed AS (
{_TAKE}
)
SELECT true AS vesper_done, * FROM done
UNION ALL
SELECT false AS vesper_done, * FROM claimed
"""
_DONE = _FENCED.format(set=f"status = 'done', finished_at = {NOW}", now=NOW, more="", names="")
COMPLETE_AND_CLAIM = text(
    _COMPLETE_AND_CLAIM.format(done=_DONE, claimable=CLAIMABLE_SQL, now=NOW, types="")
)
COMPLETE_AND_CLAIM_TYPES = text(
    _COMPLETE_AND_CLAIM.format(done=_DONE, claimable=CLAIMABLE_SQL, now=NOW, types=_TYPES)
)
RENEW = text(
    f"""
UPDATE vesper_jobs AS j SET lease_expires_at = {NOW} + CAST(:lease AS interval), updated_at = {NOW}
FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS uuid[])) AS r(id, token)
WHERE j.id = ANY(CAST(:ids AS uuid[])) AND j.id = r.id AND j.lease_token = r.token
    AND j.lease_expires_at > {NOW}
RETURNING j.*
"""
)
# SKIP LOCKED: a job a worker is completing right now is left to it (no waiting, and no
# deadlock against a batch that locks the same rows in another order)
_RETRY_LEFT = "j.retries < j.max_retries"
EXPIRE = text(
    f"""
WITH ended AS MATERIALIZED (
    SELECT id FROM vesper_jobs
    WHERE status = 'processing'
        AND (lease_expires_at <= {NOW} OR worker_id = ANY(CAST(:worker_ids AS text[])))
    FOR UPDATE SKIP LOCKED
)
UPDATE vesper_jobs AS j
SET status = CASE WHEN {_RETRY_LEFT} THEN 'failed' ELSE 'dlq' END,
    retries = j.retries + CASE WHEN {_RETRY_LEFT} THEN 1 ELSE 0 END,
    finished_at = CASE WHEN {_RETRY_LEFT} THEN j.finished_at ELSE {NOW} END,
    error = :error, worker_id = NULL, lease_token = NULL, lease_expires_at = NULL,
    updated_at = {NOW}
FROM ended WHERE j.id = ended.id
RETURNING j.*
"""
)
_INSERT = f"""
{{notify}}INSERT INTO vesper_jobs (id, type, priority, payload, status, retries, attempts,
    max_retries, error, run_at, idempotency_key, fingerprint, timeout, trace_context,
    created_at, updated_at)
SELECT r.id, r.type, r.priority, r.payload, 'pending', 0, 0, r.max_retries,
    '', COALESCE(r.run_at, {NOW} + COALESCE(r.delay, INTERVAL '0')), r.key,
    COALESCE(r.fingerprint, ''), r.timeout, r.trace, {NOW}, {NOW}
FROM unnest(
    CAST(:ids AS uuid[]), CAST(:types AS text[]), CAST(:priorities AS smallint[]),
    CAST(:payloads AS json[]), CAST(:max_retries AS integer[]),
    CAST(:run_ats AS timestamptz[]), CAST(:delays AS interval[]), CAST(:keys AS text[]),
    CAST(:fingerprints AS text[]), CAST(:timeouts AS interval[]), CAST(:traces AS text[])
) WITH ORDINALITY AS r(id, type, priority, payload, max_retries, run_at, delay, key,
    fingerprint, timeout, trace, ord)
{{notified}}ORDER BY r.ord
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, seq, run_at, created_at
"""
# The rest of each created job is what was sent: the job is built from it, not read back.
INSERT = text(_INSERT.format(notify="", notified=""))
# One statement that inserts and notifies, for a submit that runs alone in autocommit
# (the notification is delivered at its commit; on a replay it wakes workers for nothing)
INSERT_NOTIFY = text(
    _INSERT.format(
        notify=f"WITH note AS MATERIALIZED ({NOTIFY_SQL})\n",
        notified="CROSS JOIN note\n",
    )
)
# One job: scalar parameters (psycopg dumps eleven one-element arrays for the batch form)
_INSERT_ONE = f"""
{{notify}}INSERT INTO vesper_jobs (id, type, priority, payload, status, retries, attempts,
    max_retries, error, run_at, idempotency_key, fingerprint, timeout, trace_context,
    created_at, updated_at)
SELECT CAST(:id AS uuid), CAST(:type AS text), CAST(:priority AS smallint),
    CAST(:payload AS json), 'pending', 0, 0, CAST(:max_retries AS integer), '',
    COALESCE(CAST(:run_at AS timestamptz), {NOW} + CAST(:delay AS interval)),
    CAST(:key AS text), CAST(:fingerprint AS text), CAST(:timeout AS interval),
    CAST(:trace AS text), {NOW}, {NOW}
{{notified}}ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, seq, run_at, created_at
"""
INSERT_ONE = text(_INSERT_ONE.format(notify="", notified=""))
INSERT_ONE_NOTIFY = text(
    _INSERT_ONE.format(notify=f"WITH note AS MATERIALIZED ({NOTIFY_SQL})\n", notified="FROM note\n")
)
BOUND = text(
    "SELECT * FROM vesper_jobs WHERE idempotency_key IS NOT NULL"
    " AND idempotency_key = ANY(CAST(:keys AS text[]))"
)
CLOCK = text("SELECT statement_timestamp()")
NOTIFY = text(NOTIFY_SQL)

_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")


def _pyformat(statement: TextClause, kind: str = "s") -> str:
    """`statement` with psycopg's placeholders: `:name` -> `%(name)s` (or `%(name)b`)."""
    return _PARAMETER.sub(rf"%(\1){kind}", statement.text.replace("%", "%%"))


# the same statements, for the driver's connection (the text() forms stay the reference)
_DRIVER_SQL = {
    id(statement): _pyformat(statement)
    for statement in (
        CLAIM,
        CLAIM_TYPES,
        COMPLETE,
        COMPLETE_AND_CLAIM,
        COMPLETE_AND_CLAIM_TYPES,
        RELEASE,
        FAIL,
        RENEW,
        EXPIRE,
        INSERT_ONE,
        INSERT_ONE_NOTIFY,
        BOUND,
        NOTIFY,
    )
}
# Batches go in binary: psycopg's text array dumper runs a regex over every element
_DRIVER_SQL |= {id(statement): _pyformat(statement, "b") for statement in (INSERT, INSERT_NOTIFY)}


def _rows(
    conn: Connection,
    statement: TextClause,
    params: Mapping[str, Any] | None = None,
    *,
    row_factory: RowFactory[Any] = dict_row,
) -> list[Any]:
    """Run `statement` on the driver's connection under `conn`; its rows as dicts (or as
    `row_factory` makes them)."""
    sql = _DRIVER_SQL[id(statement)]
    raw: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    try:
        with raw.cursor(row_factory=row_factory) as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []
    except psycopg.Error as exc:
        # as SQLAlchemy would: a connection that broke is not handed out again
        broken = raw.closed or raw.broken
        if broken:
            conn.invalidate()
        raise DBAPIError.instance(
            sql, params, exc, psycopg.Error, connection_invalidated=broken
        ) from exc


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

    capabilities = Capabilities(multi_process=True, shared_clock=True)

    def __init__(self, db: Database, *, beat: Database | None = None) -> None:
        super().__init__(db, now_expression())
        self._beat = beat or db  # lease renewal gets its own pool: a busy one cannot starve it

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
        self, conn: Connection, plan: SubmitPlan, params: dict[str, Any], insert: Any
    ) -> list[Submitted]:
        by_id = {n.id: n for n in plan.unique}
        created = {
            job_id: _created(by_id[job_id], seq=seq, run_at=run_at, created_at=created_at)
            for job_id, seq, run_at, created_at in _rows(
                conn, insert, params, row_factory=tuple_row
            )
        }
        # keys already bound (by earlier calls, or by concurrent ones that ON CONFLICT
        # waited for): READ COMMITTED lets this new statement see them
        keys = [n.idempotency_key for n in plan.unique if n.id not in created]
        bound: dict[str, JobRecord] = {}
        if keys:
            for row in _rows(conn, BOUND, {"keys": keys}):
                job = job_of(row)
                assert job.idempotency_key is not None
                bound[job.idempotency_key] = job
        results = assemble(plan, created, bound)  # raises IdempotencyConflict: rolls back
        if created and insert is INSERT:
            _rows(conn, NOTIFY)  # delivered at commit
        return results

    def claim(
        self,
        *,
        worker_id: str,
        limit: int,
        lease: timedelta,
        types: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> list[JobRecord]:
        if limit <= 0 or (types is not None and not types):
            return []
        params = _claim_params(worker_id, limit, lease, types, now)
        statement = CLAIM if types is None else CLAIM_TYPES
        rows = self._db.statement(lambda conn: _rows(conn, statement, params))
        return in_claim_order(jobs_of(rows))

    def complete(
        self, leases: Sequence[LeaseRef], *, now: datetime | None = None
    ) -> list[JobRecord]:
        return self._fenced(self._db, COMPLETE, _sorted(leases), {"now": now}, order=leases)

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
        if not leases or limit <= 0 or (types is not None and not types):
            completed = self.complete(leases, now=now)
            claimed = self.claim(
                worker_id=worker_id, limit=limit, lease=lease, types=types, now=now
            )
            return completed, claimed
        refs = _sorted(leases)
        params = {
            **_claim_params(worker_id, limit, lease, types, now),
            "ids": [r.job_id for r in refs],
            "tokens": [r.token for r in refs],
        }
        statement = COMPLETE_AND_CLAIM if types is None else COMPLETE_AND_CLAIM_TYPES
        rows = self._db.statement(lambda conn: _rows(conn, statement, params))
        done = [job_of(row) for row in rows if row["vesper_done"]]
        claimed = [job_of(row) for row in rows if not row["vesper_done"]]
        return in_order_of(done, [r.job_id for r in leases]), in_claim_order(claimed)

    def fail(self, failures: Sequence[Failure], *, now: datetime | None = None) -> list[JobRecord]:
        ordered = sorted(failures, key=lambda f: f.lease.job_id)
        extra = {
            "now": now,
            "errors": [_text(f.error) for f in ordered],
            "delays": [f.retry_delay for f in ordered],
        }
        refs = [f.lease for f in ordered]
        return self._fenced(self._db, FAIL, refs, extra, order=[f.lease for f in failures])

    def renew(
        self, leases: Sequence[LeaseRef], *, lease: timedelta, now: datetime | None = None
    ) -> list[JobRecord]:
        params = {"now": now, "lease": lease}
        return self._fenced(self._beat, RENEW, _sorted(leases), params, order=leases)

    def release(
        self, leases: Sequence[LeaseRef], *, now: datetime | None = None
    ) -> list[JobRecord]:
        released = self._fenced(self._db, RELEASE, _sorted(leases), {"now": now}, order=leases)
        if released:
            self._db.statement(lambda conn: _rows(conn, NOTIFY))
        return released

    def expire(
        self, *, worker_ids: Sequence[str] = (), now: datetime | None = None
    ) -> list[JobRecord]:
        params = {"now": now, "worker_ids": list(worker_ids), "error": LEASE_EXPIRED_ERROR}
        rows = self._db.statement(lambda conn: _rows(conn, EXPIRE, params))
        ended = sorted(jobs_of(rows), key=lambda job: job.seq)
        if ended:
            self._db.statement(lambda conn: _rows(conn, NOTIFY))
        return ended

    def _changed(self, action: str, job: JobRecord) -> None:
        if action == "retry":
            self._db.statement(lambda conn: _rows(conn, NOTIFY))

    def _fenced(
        self,
        db: Database,
        statement: Any,
        refs: Sequence[LeaseRef],
        extra: dict[str, Any],
        *,
        order: Sequence[LeaseRef],
    ) -> list[JobRecord]:
        """Run a fenced batch update; the changed jobs come back in the caller's `order`."""
        if not refs:
            return []
        params = {"ids": [r.job_id for r in refs], "tokens": [r.token for r in refs], **extra}
        rows = db.statement(lambda conn: _rows(conn, statement, params))
        return in_order_of(jobs_of(rows), [r.job_id for r in order])


def _claim_params(
    worker_id: str,
    limit: int,
    lease: timedelta,
    types: Sequence[str] | None,
    now: datetime | None,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "now": now,
        "limit": limit,
        "worker_id": worker_id,
        "token": uuid.uuid4(),  # one per call: the fence is (job id, token)
        "lease": lease,
    }
    if types is not None:
        params["types"] = list(types)
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


def _insert_one_params(new: NewJob, now: datetime | None) -> dict[str, Any]:
    return {
        "now": now,
        "id": new.id,
        "type": new.type,
        "priority": new.priority,
        "payload": _payload_text(new),
        "max_retries": new.max_retries,
        "run_at": new.run_at,
        "delay": new.delay,
        "key": new.idempotency_key,
        "fingerprint": new.fingerprint,
        "timeout": new.timeout,
        "trace": new.trace_context,
    }


def _payload_text(new: NewJob) -> str:
    """The payload's JSON text: the one `prepare` made, else a fresh one."""
    if new.payload_json is not None:
        return new.payload_json
    return json.dumps(new.payload, separators=(",", ":"))


def _insert_params(batch: Sequence[NewJob], now: datetime | None) -> dict[str, Any]:
    return {
        "now": now,
        "ids": [n.id for n in batch],
        "types": [n.type for n in batch],
        "priorities": [n.priority for n in batch],
        # ASCII-escaped JSON text: `json` keeps it verbatim, "\u0000" and lone surrogates too
        "payloads": [_payload_text(n) for n in batch],
        "max_retries": [n.max_retries for n in batch],
        # the optional columns, usually unset for the whole batch: a NULL array instead of
        # an array of defaults (unnest pads it with NULLs; the insert reads those as unset)
        "run_ats": _unless_all([n.run_at for n in batch], None),
        "delays": _unless_all([n.delay for n in batch], timedelta(0)),
        "keys": _unless_all([n.idempotency_key for n in batch], None),
        "fingerprints": _unless_all([n.fingerprint for n in batch], ""),
        "timeouts": _unless_all([n.timeout for n in batch], None),
        "traces": _unless_all([n.trace_context for n in batch], None),
    }


def _unless_all(values: list[Any], default: object) -> list[Any] | None:
    """`values`, or None when every one is `default`."""
    return None if values.count(default) == len(values) else values
