"""PostgreSQL: vesper_claim_capped, the claim from a queue whose only limits are
`paused` and `concurrency`, in one call.

Revision ID: 0005_i15_capped_claim
Revises: 0004_i15_queues
Create Date: 2026-12-05

Such a claim must lock the queue's row and only then count the queue's processing jobs:
a count read in the statement that waited for the lock would be read from a snapshot
taken before the wait, and miss the claims committed meanwhile. From the client that is
a transaction of several round trips. Inside a PL/pgSQL function each statement takes
a fresh snapshot, so the lock, the count and the claim are one call: the worker's
completions and its next claim from a capped queue are again one statement, as for a
queue without limits.

The function serves only queues limited by `paused` and `concurrency`. A queue with
`rate`, `key_concurrency` or `aging` set raises SQLSTATE VQ001 (the caller's list of
settings was stale) and the caller claims from it its other way.

`completing` and `tokens` name the leases the same statement is completing: those jobs
are not counted as processing (whether or not the completion ran first), and a job
whose lease was lost meanwhile (another token) still is. SQLite has no functions: its
claims hold the database's write lock anyway.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_i15_capped_claim"
down_revision = "0004_i15_queues"
branch_labels = None
depends_on = None

SIGNATURE = (
    "vesper_claim_capped(text, int, text[], text, uuid, interval, timestamptz, uuid[], uuid[])"
)

FUNCTION = r"""
CREATE OR REPLACE FUNCTION vesper_claim_capped(
    claim_queue text,
    cap int,
    claim_types text[],
    claim_worker text,
    claim_token uuid,
    claim_lease interval,
    claim_now timestamptz,
    completing uuid[],
    completing_tokens uuid[]
) RETURNS SETOF vesper_jobs
LANGUAGE plpgsql VOLATILE
AS $vesper$
DECLARE
    settings vesper_queues%ROWTYPE;
    allowed int := cap;
    at timestamptz;
BEGIN
    SELECT * INTO settings FROM vesper_queues WHERE name = claim_queue FOR UPDATE;
    IF settings.rate_limit IS NOT NULL OR settings.key_concurrency IS NOT NULL
            OR settings.aging IS NOT NULL THEN
        RAISE EXCEPTION 'vesper_claim_capped: queue % has limits it does not serve',
            claim_queue USING ERRCODE = 'VQ001';
    END IF;
    IF settings.paused THEN
        RETURN;
    END IF;
    IF settings.concurrency IS NOT NULL THEN
        -- a statement begun after the lock was granted: it sees every earlier claim.
        -- (A LIMIT computed in the claim's own statement would cost the planner its
        -- row estimate, and the claim its index scan.)
        allowed := LEAST(allowed, settings.concurrency - (
            SELECT count(*) FROM vesper_jobs AS p
            WHERE p.status = 'processing' AND p.queue = claim_queue
                AND NOT EXISTS (
                    SELECT 1 FROM unnest(completing, completing_tokens) AS c(id, token)
                    WHERE c.id = p.id AND c.token = p.lease_token
                )
        ));
    END IF;
    IF allowed <= 0 THEN
        RETURN;
    END IF;
    -- the time now, not the statement's start: the lock may have been awaited
    at := COALESCE(claim_now, clock_timestamp());
    RETURN QUERY
    UPDATE vesper_jobs AS j
    SET status = 'processing', attempts = j.attempts + 1, worker_id = claim_worker,
        lease_token = claim_token, lease_expires_at = at + claim_lease,
        started_at = at, updated_at = at
    WHERE j.status IN ('pending', 'failed') AND j.id IN (
        SELECT d.id FROM vesper_jobs AS d
        WHERE d.status IN ('pending', 'failed') AND d.queue = claim_queue AND d.run_at <= at
            AND (claim_types IS NULL OR d.type = ANY(claim_types))
        ORDER BY d.priority DESC, d.run_at, d.seq
        LIMIT allowed
    )
    RETURNING j.*;
END
$vesper$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.text(FUNCTION))  # text(): its % are escaped for the driver


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
