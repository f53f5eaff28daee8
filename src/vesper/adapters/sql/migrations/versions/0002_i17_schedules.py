"""The periodic schedules table.

Revision ID: 0002_i17_schedules
Revises: 0002_i18_vesper_enqueue
Create Date: 2026-01-20

Self-contained, as every migration: SQLite keeps times as fixed-width UTC text, the
payload as JSON text and the job id as 32 hex characters.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_i17_schedules"
down_revision = "0002_i18_vesper_enqueue"
branch_labels = None
depends_on = None


def upgrade() -> None:
    timestamp = sa.DateTime(timezone=True).with_variant(sa.String(26), "sqlite")
    op.create_table(
        "vesper_schedules",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("cron", sa.Text(), nullable=False),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSON().with_variant(sa.Text(), "sqlite"), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("queue", sa.Text(), nullable=True),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("last_tick", timestamp, nullable=True),
        sa.Column("last_job_id", sa.Uuid(), nullable=True),
        sa.Column("last_declared_at", timestamp, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("vesper_schedules")
