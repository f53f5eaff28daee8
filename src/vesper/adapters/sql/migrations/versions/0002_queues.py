"""Named queues: the job's queue and concurrency key, a claim index per queue, the
queues' settings, and what each worker process serves.

Revision ID: 0002
Revises: 0001
Create Date: 2026-03-01

Self-contained, as 0001. Existing jobs join the queue "default". On PostgreSQL 11+
adding a column with a constant default rewrites no row.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

CLAIMABLE = "status IN ('pending', 'failed')"


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


def downgrade() -> None:
    op.drop_column("vesper_workers", "types")
    op.drop_column("vesper_workers", "queues")
    op.drop_table("vesper_queues")
    op.drop_index("vesper_jobs_queue_claim_idx", table_name="vesper_jobs")
    op.drop_column("vesper_jobs", "concurrency_key")
    op.drop_column("vesper_jobs", "queue")
