"""The jobs and workers tables, with the claim, expiry and listing indexes.

Revision ID: 0001
Revises:
Create Date: 2025-11-28

Self-contained on purpose: a migration must keep creating the same schema whatever
`tables.py` later becomes. SQLite has no native timestamp, interval or JSON type: times
are fixed-width UTC text, durations integer microseconds, payloads JSON text.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

CLAIMABLE = "status IN ('pending', 'failed')"
PROCESSING = "status = 'processing'"
KEYED = "idempotency_key IS NOT NULL"
LEASE_CHECK = (
    "(status = 'processing') = "
    "(worker_id IS NOT NULL AND lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)"
)


def _timestamp() -> sa.types.TypeEngine[datetime]:
    return sa.DateTime(timezone=True).with_variant(sa.String(26), "sqlite")


def upgrade() -> None:
    op.create_table(
        "vesper_jobs",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=False),
            nullable=False,
        ),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column(
            "payload",
            postgresql.JSON().with_variant(sa.Text(), "sqlite"),
            nullable=False,
        ),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("run_at", _timestamp(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("timeout", sa.Interval().with_variant(sa.BigInteger(), "sqlite"), nullable=True),
        sa.Column("trace_context", sa.Text(), nullable=True),
        sa.Column("worker_id", sa.Text(), nullable=True),
        sa.Column("lease_token", sa.Uuid(), nullable=True),
        sa.Column("lease_expires_at", _timestamp(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("started_at", _timestamp(), nullable=True),
        sa.Column("finished_at", _timestamp(), nullable=True),
        sa.UniqueConstraint("seq", name="vesper_jobs_seq_key"),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'done', 'failed', 'dlq', 'cancelled')",
            name="vesper_jobs_status_check",
        ),
        # a lease (holder, token, expiry) exists exactly while the job is processing:
        # the fenced updates rely on it (a token match implies the status)
        sa.CheckConstraint(LEASE_CHECK, name="vesper_jobs_lease_check"),
    )
    op.create_index(
        "vesper_jobs_claim_idx",
        "vesper_jobs",
        [sa.text("priority DESC"), "run_at", "seq"],
        postgresql_where=sa.text(CLAIMABLE),
        sqlite_where=sa.text(CLAIMABLE),
    )
    # partial: most jobs have no key, and every update of a row (claim, complete) would
    # otherwise add an index entry for its NULL
    op.create_index(
        "vesper_jobs_idempotency_key_idx",
        "vesper_jobs",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text(KEYED),
        sqlite_where=sa.text(KEYED),
    )
    op.create_index(
        "vesper_jobs_lease_idx",
        "vesper_jobs",
        ["lease_expires_at"],
        postgresql_where=sa.text(PROCESSING),
        sqlite_where=sa.text(PROCESSING),
    )
    op.create_index(
        "vesper_jobs_worker_idx",
        "vesper_jobs",
        ["worker_id"],
        postgresql_where=sa.text(PROCESSING),
        sqlite_where=sa.text(PROCESSING),
    )
    op.create_index("vesper_jobs_status_seq_idx", "vesper_jobs", ["status", "seq"])
    op.create_index("vesper_jobs_type_seq_idx", "vesper_jobs", ["type", "seq"])
    op.create_table(
        "vesper_workers",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("machine", sa.Text(), nullable=False),
        sa.Column("pid", sa.BigInteger(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("started_at", _timestamp(), nullable=False),
        sa.Column("last_heartbeat", _timestamp(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("vesper_workers")
    op.drop_table("vesper_jobs")
