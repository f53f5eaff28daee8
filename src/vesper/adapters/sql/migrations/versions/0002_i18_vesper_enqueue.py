"""PostgreSQL: the SQL function vesper_enqueue, for producers in any language and triggers.

Revision ID: 0002_i18_vesper_enqueue
Revises: 0002_i16_retention
Create Date: 2026-12-05

`SELECT vesper_enqueue('email', '{"to": "a@b"}')` submits a job in the caller's
transaction, with the checks of vesper's API at its default limits (each error names the
argument), and NOTIFYs the workers at commit as any submit does. SQLite has no stored
functions: nothing to do there.

Self-contained on purpose, like every migration: a later change of the function is a new
revision with CREATE OR REPLACE.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_i18_vesper_enqueue"
down_revision = "0002_i16_retention"
branch_labels = None
depends_on = None

# The limits are the API's defaults (vesper.domain.submission.Limits, VESPER_MAX_RETRIES).
# Error messages: "vesper_enqueue: <argument> <rule>", SQLSTATE 22023
# (invalid_parameter_value); a key bound to another body: 23505 (unique_violation).
#
# Queues: this schema has no `queue` column yet. The argument is checked as a queue name
# and only 'default' is accepted; the revision that adds the column replaces this
# function to store it (the one marked line below).
#
# A key's replay is recognised by a fingerprint of the arguments, computed here; it is
# not the API's (which hashes the Python form of the body), so a key first bound through
# the API and sent again from SQL with the same body is a conflict, and the reverse too.
FUNCTION = r"""
CREATE OR REPLACE FUNCTION vesper_enqueue(
    type text,
    payload jsonb,
    priority int DEFAULT 0,
    queue text DEFAULT 'default',
    run_at timestamptz DEFAULT NULL,
    idempotency_key text DEFAULT NULL
) RETURNS uuid
LANGUAGE plpgsql VOLATILE
AS $vesper$
#variable_conflict use_column
DECLARE
    max_type_length CONSTANT int := 200;
    max_payload_bytes CONSTANT int := 1048576;
    max_depth CONSTANT int := 128;
    max_key_length CONSTANT int := 255;
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
    IF queue <> 'default' THEN  -- queues: replaced when the queue column exists
        RAISE EXCEPTION 'vesper_enqueue: queue % does not exist (only ''default'' does)',
            quote_literal(queue) USING ERRCODE = '22023';
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
        print := 'sql:' || encode(sha256(convert_to(jsonb_build_array(
            type, payload, priority, queue, run_at)::text, 'UTF8')), 'hex');
    END IF;

    job_id := gen_random_uuid();
    INSERT INTO vesper_jobs AS j (
        id, type, priority, payload, status, retries, attempts, max_retries, error,
        run_at, idempotency_key, fingerprint, created_at, updated_at)
    VALUES (
        job_id, vesper_enqueue.type, vesper_enqueue.priority, vesper_enqueue.payload::json,
        'pending', 0, 0, default_max_retries, '',
        coalesce(vesper_enqueue.run_at, statement_timestamp()), vesper_enqueue.idempotency_key,
        print, statement_timestamp(), statement_timestamp())
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


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.text(FUNCTION))  # text(): its % are escaped for the driver


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS vesper_enqueue(text, jsonb, int, text, timestamptz, text)"
        )
