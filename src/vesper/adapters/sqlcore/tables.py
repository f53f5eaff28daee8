"""The tables, as SQLAlchemy Core sees them at run time, and the column types they need.

The DDL itself belongs to the alembic migrations (`migrations/versions/`); these
definitions must describe the same columns. Types differ by dialect where SQLite has no
native one: timestamps are fixed-width UTC text (so that text order is time order and
microseconds survive), durations are integer microseconds, UUIDs are 32 hex characters.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    Interval,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

JOBS = "vesper_jobs"
WORKERS = "vesper_workers"
QUEUES = "vesper_queues"
VERSION_TABLE = "vesper_alembic_version"

# The claim path's predicate: spelled exactly so in the partial index and in the claim
# queries, so that both planners can match one to the other.
CLAIMABLE_SQL = "status IN ('pending', 'failed')"
PROCESSING_SQL = "status = 'processing'"
KEYED_SQL = "idempotency_key IS NOT NULL"
# the jobs that hold their unique_key: at most one per (queue, key) (a partial unique
# index)
UNIQUE_ACTIVE_SQL = "unique_key IS NOT NULL AND status IN ('pending', 'failed', 'processing')"
FINISHED_SQL = "status IN ('done', 'dlq', 'cancelled')"
# a lease exists exactly while the job is processing (the fenced updates rely on it)
LEASE_CHECK_SQL = (
    "(status = 'processing') = "
    "(worker_id IS NOT NULL AND lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)"
)
STATUS_CHECK_SQL = "status IN ('pending', 'processing', 'done', 'failed', 'dlq', 'cancelled')"


class SqliteUtcDateTime(TypeDecorator[datetime]):
    """An aware datetime stored by SQLite as 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC.

    Fixed width, so comparing the text compares the instants; every microsecond is kept.
    SQLite itself knows no time zones: UTC is re-attached on the way out.
    """

    impl = String(26)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: vesper stores aware UTC times only")
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return datetime.fromisoformat(value).replace(tzinfo=UTC)


class SqliteMicroseconds(TypeDecorator[timedelta]):
    """A timedelta stored by SQLite as whole microseconds (exact, unlike float seconds)."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: timedelta | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds

    def process_result_value(self, value: Any, dialect: Dialect) -> timedelta | None:
        return None if value is None else timedelta(microseconds=value)


def utc_datetime() -> TypeEngine[datetime]:
    """timestamptz on PostgreSQL (psycopg returns aware datetimes), UTC text on SQLite."""
    return DateTime(timezone=True).with_variant(SqliteUtcDateTime(), "sqlite")


def duration() -> TypeEngine[timedelta]:
    return Interval().with_variant(SqliteMicroseconds(), "sqlite")


def payload_type() -> TypeEngine[Any]:
    # PostgreSQL `json`, not `jsonb`: jsonb rejects "\u0000" inside strings, which a JSON
    # payload may hold, and nothing queries inside payloads (the text is kept verbatim).
    return JSON().with_variant(postgresql.JSON(), "postgresql")


class SqliteJsonText(TypeDecorator[Any]):
    """JSON kept as TEXT on SQLite. A column declared JSON has NUMERIC affinity there,
    which turns a bare number too big for an integer (a result may be one) into a
    float; TEXT keeps the JSON text as written."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


def result_type() -> TypeEngine[Any]:
    """A job's result: any JSON value (not only an object, as a payload is)."""
    return (
        JSON()
        .with_variant(postgresql.JSON(), "postgresql")
        .with_variant(SqliteJsonText(), "sqlite")
    )


metadata = MetaData()

jobs = Table(
    JOBS,
    metadata,
    Column("id", Uuid(), primary_key=True),
    # insertion order: identity on PostgreSQL; on SQLite the store assigns max + 1 while
    # it holds the write lock (SQLite cannot autoincrement a column that is not the key)
    Column(
        "seq",
        BigInteger().with_variant(Integer(), "sqlite"),
        Identity(always=False),
        nullable=False,
    ),
    Column("type", Text(), nullable=False),
    Column("priority", SmallInteger(), nullable=False),
    Column("payload", payload_type(), nullable=False),
    Column("status", Text(), nullable=False),
    Column("retries", Integer(), nullable=False),
    Column("attempts", Integer(), nullable=False),
    Column("max_retries", Integer(), nullable=False),
    Column("error", Text(), nullable=False),
    Column("run_at", utc_datetime(), nullable=False),
    Column("idempotency_key", Text(), nullable=True),
    Column("fingerprint", Text(), nullable=False),
    Column("timeout", duration(), nullable=True),
    Column("trace_context", Text(), nullable=True),
    Column("worker_id", Text(), nullable=True),
    Column("lease_token", Uuid(), nullable=True),
    Column("lease_expires_at", utc_datetime(), nullable=True),
    Column("created_at", utc_datetime(), nullable=False),
    Column("updated_at", utc_datetime(), nullable=False),
    Column("started_at", utc_datetime(), nullable=True),
    Column("finished_at", utc_datetime(), nullable=True),
    Column("result", result_type(), nullable=True),  # the consumer's return value
    # in the order the migrations added them: SQLite's RETURNING * is read by position
    Column("cancel_requested_at", utc_datetime(), nullable=True),
    Column("snoozes", Integer(), nullable=False, server_default=text("0")),
    Column("unique_key", Text(), nullable=True),
    Column("queue", Text(), nullable=False, server_default=text("'default'")),
    Column("concurrency_key", Text(), nullable=True),
    UniqueConstraint("seq", name="vesper_jobs_seq_key"),
    CheckConstraint(STATUS_CHECK_SQL, name="vesper_jobs_status_check"),
    CheckConstraint(LEASE_CHECK_SQL, name="vesper_jobs_lease_check"),
    # the claim path: only due-able jobs are in it, so finished rows cost it nothing
    Index(
        "vesper_jobs_claim_idx",
        text("priority DESC"),
        "run_at",
        "seq",
        postgresql_where=text(CLAIMABLE_SQL),
        sqlite_where=text(CLAIMABLE_SQL),
    ),
    # a claim from one queue: its due jobs in claim order
    Index(
        "vesper_jobs_queue_claim_idx",
        "queue",
        text("priority DESC"),
        "run_at",
        "seq",
        postgresql_where=text(CLAIMABLE_SQL),
        sqlite_where=text(CLAIMABLE_SQL),
    ),
    # idempotency: ON CONFLICT (idempotency_key) WHERE ... infers this index; partial, so
    # that the many jobs without a key cost it nothing at each update
    Index(
        "vesper_jobs_idempotency_key_idx",
        "idempotency_key",
        unique=True,
        postgresql_where=text(KEYED_SQL),
        sqlite_where=text(KEYED_SQL),
    ),
    Index(
        "vesper_jobs_lease_idx",
        "lease_expires_at",
        postgresql_where=text(PROCESSING_SQL),
        sqlite_where=text(PROCESSING_SQL),
    ),
    Index(
        "vesper_jobs_worker_idx",
        "worker_id",
        postgresql_where=text(PROCESSING_SQL),
        sqlite_where=text(PROCESSING_SQL),
    ),
    # one active job per unique key in each queue. The key leads: every holder lookup
    # gives the key, and keys are many and distinct where queues are few, so the
    # leading column alone narrows a lookup to one entry per queue using the key (the
    # PostgreSQL lookup's `unique_key = ANY(...)` is an index condition on it)
    Index(
        "vesper_jobs_unique_key_idx",
        "unique_key",
        "queue",
        unique=True,
        postgresql_where=text(UNIQUE_ACTIVE_SQL),
        sqlite_where=text(UNIQUE_ACTIVE_SQL),
    ),
    Index("vesper_jobs_status_seq_idx", "status", "seq"),
    Index("vesper_jobs_type_seq_idx", "type", "seq"),
    # prunes: the oldest finished jobs of a status, and nothing else
    Index(
        "vesper_jobs_finished_idx",
        "status",
        "finished_at",
        postgresql_where=text(FINISHED_SQL),
        sqlite_where=text(FINISHED_SQL),
    ),
)

workers = Table(
    WORKERS,
    metadata,
    Column("id", Text(), primary_key=True),
    Column("machine", Text(), nullable=False),
    Column("pid", BigInteger(), nullable=False),
    Column("concurrency", Integer(), nullable=False),
    Column("started_at", utc_datetime(), nullable=False),
    Column("last_heartbeat", utc_datetime(), nullable=False),
    Column("queues", Text(), nullable=True),  # JSON {"queue": slots}; NULL: every queue
    Column("types", Text(), nullable=True),  # JSON ["type", ...]; NULL: every type
)

# A claim consults a queue's row only when the queue is limited: this predicate, spelled
# once for the claims' exclusion of limited queues and the cache of their names.
LIMITED_SQL = (
    "(paused OR concurrency IS NOT NULL OR rate_limit IS NOT NULL "
    "OR key_concurrency IS NOT NULL OR aging IS NOT NULL)"
)

queues = Table(
    QUEUES,
    metadata,
    Column("name", Text(), primary_key=True),
    Column("paused", Boolean(), nullable=False),
    Column("concurrency", Integer(), nullable=True),
    Column("rate_limit", Integer(), nullable=True),
    Column("rate_period", duration(), nullable=True),
    Column("key_concurrency", Integer(), nullable=True),
    Column("aging", duration(), nullable=True),
    # the times of the claims the rate's sliding window counts: JSON microseconds
    Column("rate_log", Text(), nullable=False),
    Column("updated_at", utc_datetime(), nullable=False),
)

SCHEDULES = "vesper_schedules"

# periodic schedules by name (revision 0002_i17_schedules): each one's last declaration
# and its state (paused, the last tick submitted and its job)
schedules = Table(
    SCHEDULES,
    metadata,
    Column("name", Text(), primary_key=True),
    Column("cron", Text(), nullable=False),
    Column("timezone", Text(), nullable=False),
    Column("type", Text(), nullable=False),
    Column("payload", payload_type(), nullable=False),
    Column("priority", SmallInteger(), nullable=False),
    Column("queue", Text(), nullable=True),
    Column("paused", Boolean(), nullable=False),
    Column("last_tick", utc_datetime(), nullable=True),
    Column("last_job_id", Uuid(), nullable=True),
    Column("last_declared_at", utc_datetime(), nullable=False),
)
