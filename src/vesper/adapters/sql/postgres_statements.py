"""The PostgreSQL job repository's statements, and how they run on the driver's connection.

Time is the database's when `now` is None: every statement reads
`COALESCE(:now, statement_timestamp())`. statement_timestamp() (not clock_timestamp())
because it is one value for the whole statement, so started_at + lease equals
lease_expires_at exactly, and it is STABLE, so the planner may use it in index scans.
Batches travel as arrays (`unnest`): one round trip whatever the batch size.

The statements run on the driver's own connection (`run`): SQLAlchemy's result set-up
per call cost more than psycopg's whole execution of a claim. psycopg prepares each of
them after its prepare_threshold executions on a connection. Errors are wrapped as
SQLAlchemy wraps them, so Database's retries and StoreUnavailable mapping hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

import attrs
import psycopg
from psycopg.rows import RowFactory, dict_row
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import TextClause

from vesper.adapters.sql.notify import (
    FINISHED_NOTIFY_SQL,
    FINISHED_PAYLOAD_IDS,
    NOTIFY_SQL,
    WAITERS_ABSENT_SQL,
)
from vesper.adapters.sqlcore.queues import NOT_LIMITED_SQL
from vesper.adapters.sqlcore.tables import (
    CLAIMABLE_SQL,
    FINISHED_SQL,
    KEYED_SQL,
    UNIQUE_ACTIVE_SQL,
    jobs,
)
from vesper.domain.job import UniqueSlot
from vesper.domain.submission import NewJob

NOW = "COALESCE(CAST(:now AS timestamptz), statement_timestamp())"

# -- claim --------------------------------------------------------------------------------

_PICKED = """picked AS MATERIALIZED (
    SELECT id FROM vesper_jobs
    WHERE {claimable} AND run_at <= {now} {types} {queues} AND {not_limited}
    ORDER BY priority DESC, run_at, seq
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)"""
# one lease token for the whole batch: the fence is (job id, token)
_TAKE = """UPDATE vesper_jobs AS j
SET status = 'processing', attempts = j.attempts + 1, worker_id = :worker_id,
    lease_token = :token, lease_expires_at = {now} + CAST(:lease AS interval),
    started_at = {now}, updated_at = {now}
FROM picked WHERE j.id = picked.id
RETURNING j.*"""
_CLAIM = f"\nWITH {_PICKED}\n{_TAKE}\n"
_TYPES = "AND type = ANY(CAST(:types AS text[]))"
# one queue: `=` keeps the (queue, priority, run_at, seq) index's order, which `= ANY`
# loses on PostgreSQL 15 (the due jobs of the queue would be sorted at every claim)
_QUEUES = {
    "all": "",
    "one": "AND queue = CAST(:queue AS text)",
    "many": "AND queue = ANY(CAST(:queues AS text[]))",
}
ClaimShape = tuple[bool, str]  # (types given, which of _QUEUES)
SHAPES: list[ClaimShape] = [(typed, q) for typed in (False, True) for q in _QUEUES]


def _claim_sql(template: str, shape: ClaimShape, **more: str) -> TextClause:
    typed, queues = shape
    return text(
        template.format(
            claimable=CLAIMABLE_SQL,
            now=NOW,
            types=_TYPES if typed else "",
            queues=_QUEUES[queues],
            not_limited=NOT_LIMITED_SQL,
            **more,
        )
    )


CLAIMS = {shape: _claim_sql(_CLAIM, shape) for shape in SHAPES}
CLAIM = CLAIMS[False, "all"]

# -- the fenced updates -------------------------------------------------------------------

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
# the consumers' results travel as a third array, of JSON text; NULL for a batch with
# none (unnest pads it with NULLs), so a batch without results sends nothing more
_DONE = _FENCED.format(
    set=f"status = 'done', finished_at = {NOW}, result = CAST(r.result AS json)",
    now=NOW,
    more=", CAST(:results AS text[])",
    names=", result",
)
# Waiters learn that jobs finished by one notification per statement (delivered at
# commit), sent only when the statement finished a job and some process listens for
# finished jobs (WAITERS_ABSENT_SQL, in notify.py); `finished` is the statement's CTE of
# changed rows, and `{finished_where}` picks the rows that finished. The payload names
# the finished jobs (comma-separated) so that the waiters read only those; empty (read
# every waited job) when they would not fit a payload (FINISHED_PAYLOAD_IDS).
_NOTE = (
    """note AS MATERIALIZED (
    SELECT pg_notify('vesper_finished', ids) FROM (
        SELECT CASE WHEN count(*) <= """
    + str(FINISHED_PAYLOAD_IDS)
    + """ THEN string_agg(id::text, ',') ELSE '' END AS ids
        FROM {finished} {finished_where} HAVING count(*) > 0
    ) AS finished_ids
    WHERE NOT """
    + WAITERS_ABSENT_SQL
    + """
)"""
)
assert FINISHED_NOTIFY_SQL == "SELECT pg_notify('vesper_finished', '')"  # one channel name


def _noting(update: str, finished_where: str = "") -> str:
    """`update` (a fenced UPDATE ... RETURNING j.*), notifying the finished channel."""
    note = _NOTE.format(finished="changed", finished_where=finished_where)
    return f"""
WITH changed AS ({update}),
{note}
SELECT changed.* FROM changed LEFT JOIN note ON true
"""


COMPLETE = text(_noting(_DONE))
# a job with a cancel request ends cancelled at whatever ends its attempt, but a success
_REQUESTED = "j.cancel_requested_at IS NOT NULL"
_ENDED = f"finished_at = CASE WHEN {_REQUESTED} THEN {NOW} ELSE j.finished_at END"
_CANCELLED = "'cancelled'"
# the statements that end a job with a cancel request also wake its waiters
_WHEN_CANCELLED = f"WHERE status = {_CANCELLED}"
RELEASE = text(
    _noting(
        _FENCED.format(
            set=(
                f"status = CASE WHEN {_REQUESTED} THEN 'cancelled' ELSE 'pending' END, "
                f"attempts = GREATEST(j.attempts - 1, 0), started_at = NULL, {_ENDED}"
            ),
            now=NOW,
            more="",
            names="",
        ),
        _WHEN_CANCELLED,
    )
)
SNOOZE = text(
    _noting(
        _FENCED.format(
            set=(
                f"status = CASE WHEN {_REQUESTED} THEN 'cancelled' ELSE 'pending' END, "
                "attempts = GREATEST(j.attempts - 1, 0), snoozes = j.snoozes + 1, "
                f"run_at = {NOW} + r.delay, started_at = NULL, {_ENDED}"
            ),
            now=NOW,
            more=", CAST(:delays AS interval[])",
            names=", delay",
        ),
        _WHEN_CANCELLED,
    )
)
_RETRYING = "r.delay IS NOT NULL AND j.retries < j.max_retries"
_FAIL = _FENCED.format(
    set=(
        f"status = CASE WHEN {_REQUESTED} THEN 'cancelled' "
        f"WHEN {_RETRYING} THEN 'failed' ELSE 'dlq' END, "
        f"retries = j.retries + CASE WHEN {_RETRYING} THEN 1 ELSE 0 END, "
        f"run_at = CASE WHEN {_RETRYING} THEN {NOW} + r.delay ELSE j.run_at END, "
        f"finished_at = CASE WHEN {_REQUESTED} THEN {NOW} "
        f"WHEN {_RETRYING} THEN j.finished_at ELSE {NOW} END, "
        "error = r.error"
    ),
    now=NOW,
    more=", CAST(:errors AS text[]), CAST(:delays AS interval[])",
    names=", error, delay",
)
FAIL = text(_noting(_FAIL, f"WHERE status IN ('dlq', {_CANCELLED})"))
# A worker's finished batch and its next claim, one statement (one round trip, one
# commit). The claim's snapshot sees the completed jobs as processing: never claimable.
_COMPLETE_AND_CLAIM = f"""
WITH done AS ({{done}}),
{_NOTE.format(finished="done", finished_where="")},
{_PICKED},
claimed AS (
{_TAKE}
)
SELECT true AS vesper_done, done.* FROM done LEFT JOIN note ON true
UNION ALL
SELECT false AS vesper_done, * FROM claimed
"""
COMPLETES_AND_CLAIMS = {
    shape: _claim_sql(_COMPLETE_AND_CLAIM, shape, done=_DONE) for shape in SHAPES
}
# The claim from one queue whose only limits are `paused` and `concurrency`: the function
# of revision 0005_i15_capped_claim locks the queue's row, counts its processing jobs
# (leaving out the leases being completed in the same statement) and claims, one call.
# It raises CAPPED_STALE for a queue with other limits (the caller's list was stale).
CAPPED_STALE = "VQ001"
_CAPPED = """vesper_claim_capped(
    CAST(:queue AS text), CAST(:limit AS int), CAST(:types AS text[]),
    CAST(:worker_id AS text), CAST(:token AS uuid), CAST(:lease AS interval),
    CAST(:now AS timestamptz), CAST(:ids AS uuid[]), CAST(:tokens AS uuid[])
)"""
CLAIM_CAPPED = text(f"SELECT * FROM {_CAPPED}")
COMPLETE_AND_CLAIM_CAPPED = text(
    f"""
WITH done AS ({_DONE}),
{_NOTE.format(finished="done", finished_where="")}
SELECT true AS vesper_done, done.* FROM done LEFT JOIN note ON true
UNION ALL
SELECT false AS vesper_done, capped.* FROM {_CAPPED} AS capped
"""
)
# a job with a cancel request ends cancelled here: its worker learns it from the result
_RENEW = f"""
UPDATE vesper_jobs AS j SET
    status = CASE WHEN {_REQUESTED} THEN 'cancelled' ELSE j.status END,
    worker_id = CASE WHEN {_REQUESTED} THEN NULL ELSE j.worker_id END,
    lease_token = CASE WHEN {_REQUESTED} THEN NULL ELSE j.lease_token END,
    lease_expires_at = CASE WHEN {_REQUESTED} THEN NULL
        ELSE {NOW} + CAST(:lease AS interval) END,
    {_ENDED}, updated_at = {NOW}
FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS uuid[])) AS r(id, token)
WHERE j.id = ANY(CAST(:ids AS uuid[])) AND j.id = r.id AND j.lease_token = r.token
    AND j.lease_expires_at > {NOW}
RETURNING j.*
"""
RENEW = text(_noting(_RENEW, _WHEN_CANCELLED))
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
SET status = CASE WHEN {_REQUESTED} THEN 'cancelled'
        WHEN {_RETRY_LEFT} THEN 'failed' ELSE 'dlq' END,
    retries = j.retries + CASE WHEN {_RETRY_LEFT} THEN 1 ELSE 0 END,
    finished_at = CASE WHEN {_REQUESTED} THEN {NOW}
        WHEN {_RETRY_LEFT} THEN j.finished_at ELSE {NOW} END,
    error = :error, worker_id = NULL, lease_token = NULL, lease_expires_at = NULL,
    updated_at = {NOW}
FROM ended WHERE j.id = ended.id
RETURNING j.*
"""
)

# -- retention ----------------------------------------------------------------------------

# The oldest finished jobs of one status, deleted in one short transaction. SKIP LOCKED:
# a row another pruner (or a retry) holds is left to it, so pruners never wait for each
# other; claims never lock finished rows, so they never wait for a prune. FINISHED_SQL
# is spelled out for the planner to use the partial index vesper_jobs_finished_idx.
PRUNE = text(
    f"""
WITH doomed AS MATERIALIZED (
    SELECT id FROM vesper_jobs
    WHERE {FINISHED_SQL} AND status = :status
        AND finished_at <= {NOW} - CAST(:age AS interval)
    ORDER BY finished_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
DELETE FROM vesper_jobs AS j USING doomed WHERE j.id = doomed.id
RETURNING j.status
"""
)
GET_MANY = text("SELECT * FROM vesper_jobs WHERE id = ANY(CAST(:ids AS uuid[]))")

# -- submission ---------------------------------------------------------------------------

# What a submission supplies: the job columns NewJob has a field for, and `delay` (its
# other way to give run_at), each a parameter of the same name. The INSERTs below (a
# batch with or without NOTIFY, one job with it) are built from these tables alone.
SUPPLIED = (
    *(c.name for c in jobs.c if c.name in attrs.fields_dict(NewJob)),
    "delay",
)
# The value a whole batch usually shares, sent as one NULL array instead (unnest pads it
# with NULLs); where that value is not NULL, _VALUES turns NULL back into it.
BLANK: dict[str, object] = {
    "queue": "default",
    "concurrency_key": None,
    "run_at": None,
    "delay": timedelta(0),
    "idempotency_key": None,
    "fingerprint": "",
    "timeout": None,
    "trace_context": None,
    "unique_key": None,
}
_VALUES = {
    "queue": "COALESCE(r.queue, 'default')",
    "run_at": f"COALESCE(r.run_at, {NOW} + COALESCE(r.delay, INTERVAL '0'))",
    "fingerprint": "COALESCE(r.fingerprint, '')",
}
# the columns the store sets in a new row; the rest (seq, the lease, ...) take their default
_SET_BY_STORE = {
    "status": "'pending'",
    "retries": "0",
    "attempts": "0",
    "error": "''",
    "snoozes": "0",
    "created_at": NOW,
    "updated_at": NOW,
}
_DIALECT = PGDialect()  # type: ignore[no-untyped-call]  # (SQLAlchemy leaves it unannotated)
_SQL_TYPES = {
    **{c.name: c.type.compile(dialect=_DIALECT) for c in jobs.c if c.name in SUPPLIED},
    "delay": "INTERVAL",
}
_INSERTED = [c.name for c in jobs.c if c.name in SUPPLIED or c.name in _SET_BY_STORE]
_INSERT = """
{notify}INSERT INTO vesper_jobs ({columns})
SELECT {values}
FROM {source}{notified}
ON CONFLICT DO NOTHING
RETURNING id, seq, run_at, created_at
"""
# ON CONFLICT without a target: a job is skipped when its idempotency key is bound
# (vesper_jobs_idempotency_key_idx) or an active job of its queue holds its unique key
# (vesper_jobs_unique_key_idx, on (unique_key, queue)); the submission then reads which.
# A batch: one array per input. One job: scalar parameters, a fast path (psycopg would
# dump eleven one-element arrays for the batch form): 2,433 against 2,090 single submits
# a second, 161 against 201 us of client CPU each (docs/benchmarks.md). The contract
# suite's submits go through both.
_BATCH = "unnest({}) WITH ORDINALITY AS r({}, ord)".format(
    ", ".join(f"CAST(:{name} AS {_SQL_TYPES[name]}[])" for name in SUPPLIED), ", ".join(SUPPLIED)
)
_ONE = "(SELECT {}) AS r".format(
    ", ".join(f"CAST(:{name} AS {_SQL_TYPES[name]}) AS {name}" for name in SUPPLIED)
)


def _insert(source: str, *, notify: bool) -> TextClause:
    values = [
        _SET_BY_STORE[name] if name in _SET_BY_STORE else _VALUES.get(name, f"r.{name}")
        for name in _INSERTED
    ]
    # the batch's rows go in its order, so that seq follows it
    order = "\nORDER BY r.ord" if source is _BATCH else ""
    return text(
        _INSERT.format(
            # the notification is delivered at the commit (on a replay it wakes workers
            # for nothing)
            notify=f"WITH note AS MATERIALIZED ({NOTIFY_SQL})\n" if notify else "",
            columns=", ".join(_INSERTED),
            values=", ".join(values),
            source=source,
            notified=("\nCROSS JOIN note" if notify else "") + order,
        )
    )


# The rest of each created job is what was sent: the job is built from it, not read back.
INSERT = _insert(_BATCH, notify=False)
INSERT_NOTIFY = _insert(_BATCH, notify=True)  # a submit that runs alone in autocommit
INSERT_ONE_NOTIFY = _insert(_ONE, notify=True)
BOUND = text(
    f"SELECT * FROM vesper_jobs WHERE {KEYED_SQL} AND idempotency_key = ANY(CAST(:keys AS text[]))"
)
# the active jobs holding some (queue, unique key) slots, given as two arrays of one
# length (`holder_params`): `unique_key = ANY` is the index condition on the unique
# index's leading column, and the pairs keep only the slots asked for (a key asked for
# in one queue has no holder in another)
ACTIVE_HOLDERS = text(
    f"SELECT * FROM vesper_jobs WHERE {UNIQUE_ACTIVE_SQL} "
    "AND unique_key = ANY(CAST(:uniques AS text[])) "
    "AND (queue, unique_key) IN "
    "(SELECT * FROM unnest(CAST(:queues AS text[]), CAST(:uniques AS text[])))"
)


def holder_params(slots: Iterable[UniqueSlot]) -> dict[str, list[str]]:
    """ACTIVE_HOLDERS's parameters for `slots`."""
    ordered = sorted(set(slots))
    return {"queues": [s.queue for s in ordered], "uniques": [s.key for s in ordered]}


NOTIFY = text(NOTIFY_SQL)
NOTIFY_FINISHED = text(FINISHED_NOTIFY_SQL)

# -- running them -------------------------------------------------------------------------

_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")


def _pyformat(statement: TextClause, kind: str = "s") -> str:
    """`statement` with psycopg's placeholders: `:name` -> `%(name)s` (or `%(name)b`)."""
    return _PARAMETER.sub(rf"%(\1){kind}", statement.text.replace("%", "%%"))


_DRIVER_SQL = {
    id(statement): _pyformat(statement)
    for statement in (
        *CLAIMS.values(),
        COMPLETE,
        *COMPLETES_AND_CLAIMS.values(),
        CLAIM_CAPPED,
        COMPLETE_AND_CLAIM_CAPPED,
        RELEASE,
        FAIL,
        RENEW,
        SNOOZE,
        EXPIRE,
        INSERT_ONE_NOTIFY,
        BOUND,
        ACTIVE_HOLDERS,
        NOTIFY,
        NOTIFY_FINISHED,
        PRUNE,
        GET_MANY,
    )
}
# Batches go in binary: psycopg's text array dumper runs a regex over every element
_DRIVER_SQL |= {id(statement): _pyformat(statement, "b") for statement in (INSERT, INSERT_NOTIFY)}


def driver_sql(statement: TextClause) -> str:
    """`statement` as psycopg takes it (placeholders `%(name)s`)."""
    return _DRIVER_SQL[id(statement)]


def run(
    conn: Connection,
    statement: TextClause,
    params: Mapping[str, Any] | None = None,
    *,
    row_factory: RowFactory[Any] = dict_row,
    prepare: bool | None = None,
) -> list[Any]:
    """Run `statement` on the driver's connection under `conn`; its rows as dicts (or as
    `row_factory` makes them). `prepare`: psycopg's (None: prepared once it has run a
    few times; False: planned for its parameters each time)."""
    sql = driver_sql(statement)
    raw: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    try:
        with raw.cursor(row_factory=row_factory) as cursor:
            cursor.execute(sql, params, prepare=prepare)
            return cursor.fetchall() if cursor.description is not None else []
    except psycopg.Error as exc:
        # as SQLAlchemy would: a connection that broke is not handed out again
        broken = raw.closed or raw.broken
        if broken:
            conn.invalidate()
        raise DBAPIError.instance(
            sql, params, exc, psycopg.Error, connection_invalidated=broken
        ) from exc
