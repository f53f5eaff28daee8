"""Named queues: the job's queue and concurrency key, a claim index per queue, the
queues' settings, and what each worker process serves.

Revision ID: 0004_i15_queues
Revises: 0003_i16_control
Create Date: 2026-03-01

Self-contained, as 0001. Existing jobs join the queue "default". On PostgreSQL 11+
adding a column with a constant default rewrites no row.

PostgreSQL: vesper_enqueue (revision 0002_i18_vesper_enqueue) now stores its `queue`
argument (any queue name, as the API accepts) and takes a seventh, `concurrency_key`.
A new argument makes a new function in PostgreSQL (CREATE OR REPLACE would leave both,
and make every call ambiguous): the six-argument one is dropped first, in the same
transaction.
"""

from __future__ import annotations

import importlib.util
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0004_i15_queues"
down_revision = "0003_i16_control"
branch_labels = None
depends_on = None

CLAIMABLE = "status IN ('pending', 'failed')"
OLD_SIGNATURE = "vesper_enqueue(text, jsonb, int, text, timestamptz, text)"
NEW_SIGNATURE = "vesper_enqueue(text, jsonb, int, text, timestamptz, text, text)"

# As in 0002_i18_vesper_enqueue, but for the queue (stored; no longer 'default' only)
# and the concurrency key (checked as the API checks it).
FUNCTION = r"""
CREATE OR REPLACE FUNCTION vesper_enqueue(
    type text,
    payload jsonb,
    priority int DEFAULT 0,
    queue text DEFAULT 'default',
    run_at timestamptz DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    concurrency_key text DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql VOLATILE
AS $vesper$
#variable_conflict use_column
DECLARE
    max_type_length CONSTANT int := 200;
    max_payload_bytes CONSTANT int := 1048576;
    max_depth CONSTANT int := 128;
    max_key_length CONSTANT int := 255;
    max_concurrency_key CONSTANT int := 255;
    default_max_retries CONSTANT int := 3;
    earliest_run_at CONSTANT timestamptz := '1999-12-31T00:00:00Z';
    depth int;
    print text := '';
    job_id uuid;
    bound_id uuid;
    bound_print text;
BEGIN
    IF type IS NULL OR char_length(type) NOT BETWEEN 1 AND max_type_length THEN
        RAISE EXCEPTION 'vesper_enqueue: type must be a string of 1 to % characters',
            max_type_length USING ERRCODE = '22023';
    END IF;
    IF type ~ '[\x01-\x1f\x7f-\x9f]' THEN
        RAISE EXCEPTION 'vesper_enqueue: type must not contain control characters'
            USING ERRCODE = '22023';
    END IF;
    IF type ~ '^[ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$' THEN
        RAISE EXCEPTION 'vesper_enqueue: type must not be blank' USING ERRCODE = '22023';
    END IF;
    IF priority IS NULL OR priority NOT BETWEEN 0 AND 10 THEN
        RAISE EXCEPTION 'vesper_enqueue: priority must be an integer from 0 to 10 (got %)',
            coalesce(priority::text, 'NULL') USING ERRCODE = '22023';
    END IF;
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'vesper_enqueue: payload must be a JSON object (got %)',
            coalesce(jsonb_typeof(payload), 'NULL') USING ERRCODE = '22023';
    END IF;
    IF octet_length(payload::text) > max_payload_bytes THEN
        RAISE EXCEPTION 'vesper_enqueue: payload is larger than % bytes', max_payload_bytes
            USING ERRCODE = '22023';
    END IF;
    WITH RECURSIVE walk(value, level) AS (
        SELECT payload, 1
        UNION ALL
        SELECT child, w.level + 1
        FROM walk AS w, LATERAL (
            SELECT e.value FROM jsonb_each(
                CASE WHEN jsonb_typeof(w.value) = 'object' THEN w.value ELSE '{}' END) AS e
            UNION ALL
            SELECT a.value FROM jsonb_array_elements(
                CASE WHEN jsonb_typeof(w.value) = 'array' THEN w.value ELSE '[]' END) AS a
        ) AS c(child)
        WHERE jsonb_typeof(child) IN ('object', 'array') AND w.level <= max_depth
    )
    SELECT max(level) INTO depth FROM walk;
    IF depth > max_depth THEN
        RAISE EXCEPTION 'vesper_enqueue: payload nests deeper than % levels', max_depth
            USING ERRCODE = '22023';
    END IF;
    IF queue IS NULL OR queue !~ '^[A-Za-z0-9_.-]{1,64}$' THEN
        RAISE EXCEPTION 'vesper_enqueue: queue must be 1 to 64 characters of A-Z a-z 0-9 _ . -'
            USING ERRCODE = '22023';
    END IF;
    IF concurrency_key IS NOT NULL THEN
        IF char_length(concurrency_key) NOT BETWEEN 1 AND max_concurrency_key THEN
            RAISE EXCEPTION 'vesper_enqueue: concurrency_key must be 1 to % characters',
                max_concurrency_key USING ERRCODE = '22023';
        END IF;
        IF concurrency_key ~ '[\x01-\x1f\x7f-\x9f]' THEN
            RAISE EXCEPTION 'vesper_enqueue: concurrency_key must not contain control characters'
                USING ERRCODE = '22023';
        END IF;
    END IF;
    IF run_at IS NOT NULL AND (run_at < earliest_run_at OR NOT isfinite(run_at)) THEN
        RAISE EXCEPTION 'vesper_enqueue: run_at must be a finite time in the year 2000 or later'
            USING ERRCODE = '22023';
    END IF;
    IF idempotency_key IS NOT NULL THEN
        IF idempotency_key !~ ('^[ -~]{1,' || max_key_length || '}$') THEN
            RAISE EXCEPTION
                'vesper_enqueue: idempotency_key must be 1 to % characters of printable ASCII',
                max_key_length USING ERRCODE = '22023';
        END IF;
        -- a concurrency key joins the arguments only when given: the prints of keys
        -- bound before this revision stay the same
        print := 'sql:' || encode(sha256(convert_to((jsonb_build_array(
            type, payload, priority, queue, run_at) || CASE WHEN concurrency_key IS NULL
            THEN '[]'::jsonb ELSE jsonb_build_array(concurrency_key) END)::text, 'UTF8')),
            'hex');
    END IF;

    job_id := gen_random_uuid();
    INSERT INTO vesper_jobs AS j (
        id, type, priority, payload, status, retries, attempts, max_retries, error,
        run_at, idempotency_key, fingerprint, created_at, updated_at, queue, concurrency_key)
    VALUES (
        job_id, vesper_enqueue.type, vesper_enqueue.priority, vesper_enqueue.payload::json,
        'pending', 0, 0, default_max_retries, '',
        coalesce(vesper_enqueue.run_at, statement_timestamp()), vesper_enqueue.idempotency_key,
        print, statement_timestamp(), statement_timestamp(), vesper_enqueue.queue,
        vesper_enqueue.concurrency_key)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;
    IF FOUND THEN
        PERFORM pg_notify('vesper_jobs', '');  -- delivered at commit
        RETURN job_id;
    END IF;
    -- the key is bound, by an earlier transaction or by a concurrent one the INSERT
    -- waited for: this new statement sees it (READ COMMITTED)
    SELECT j.id, j.fingerprint INTO bound_id, bound_print
    FROM vesper_jobs AS j
    WHERE j.idempotency_key IS NOT NULL AND j.idempotency_key = vesper_enqueue.idempotency_key;
    IF bound_print IS DISTINCT FROM print THEN
        RAISE EXCEPTION
            'vesper_enqueue: idempotency_key % is bound to a job with other arguments',
            quote_literal(idempotency_key) USING ERRCODE = '23505';
    END IF;
    RETURN bound_id;
END
$vesper$
"""


def _timestamp() -> sa.types.TypeEngine[datetime]:
    return sa.DateTime(timezone=True).with_variant(sa.String(26), "sqlite")


def _duration() -> sa.types.TypeEngine[timedelta]:
    return sa.Interval().with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    op.add_column(
        "vesper_jobs",
        sa.Column("queue", sa.Text(), nullable=False, server_default=sa.text("'default'")),
    )
    op.add_column("vesper_jobs", sa.Column("concurrency_key", sa.Text(), nullable=True))
    # a claim from one queue reads its due jobs in claim order, and stops at its limit
    op.create_index(
        "vesper_jobs_queue_claim_idx",
        "vesper_jobs",
        ["queue", sa.text("priority DESC"), "run_at", "seq"],
        postgresql_where=sa.text(CLAIMABLE),
        sqlite_where=sa.text(CLAIMABLE),
    )
    op.create_table(
        "vesper_queues",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=True),
        sa.Column("rate_limit", sa.Integer(), nullable=True),
        sa.Column("rate_period", _duration(), nullable=True),
        sa.Column("key_concurrency", sa.Integer(), nullable=True),
        sa.Column("aging", _duration(), nullable=True),
        sa.Column("rate_log", sa.Text(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
    )
    op.add_column("vesper_workers", sa.Column("queues", sa.Text(), nullable=True))
    op.add_column("vesper_workers", sa.Column("types", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {OLD_SIGNATURE}")
        op.execute(sa.text(FUNCTION))  # text(): its % are escaped for the driver


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {NEW_SIGNATURE}")
        # the previous revision's function, from its (released, unchanging) file
        path = Path(__file__).with_name("0002_i18_vesper_enqueue.py")
        spec = importlib.util.spec_from_file_location("vesper_i18_migration", path)
        assert spec is not None
        assert spec.loader is not None
        previous = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(previous)
        op.execute(sa.text(previous.FUNCTION))
    op.drop_column("vesper_workers", "types")
    op.drop_column("vesper_workers", "queues")
    op.drop_table("vesper_queues")
    op.drop_index("vesper_jobs_queue_claim_idx", table_name="vesper_jobs")
    op.drop_column("vesper_jobs", "concurrency_key")
    op.drop_column("vesper_jobs", "queue")
