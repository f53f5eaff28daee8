"""Cancel requests, snooze counts and unique keys on jobs (issue 16).

Revision ID: 0003_i16_control
Revises: 0002_i17_schedules
Create Date: 2026-01-20

`cancel_requested_at`: a cancel of a processing job, acted on at its worker's next
renewal. `snoozes`: times a consumer raised vesper.Snooze. `unique_key`: at most one
active (pending, failed or processing) job per key, a partial unique index that the
submission's INSERT ... ON CONFLICT DO NOTHING meets like the idempotency key's.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0003_i16_control"
down_revision = "0002_i17_schedules"
branch_labels = None
depends_on = None

UNIQUE_ACTIVE = "unique_key IS NOT NULL AND status IN ('pending', 'failed', 'processing')"


def _timestamp() -> sa.types.TypeEngine[datetime]:
    return sa.DateTime(timezone=True).with_variant(sa.String(26), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("vesper_jobs") as batch:
        batch.add_column(sa.Column("cancel_requested_at", _timestamp(), nullable=True))
        batch.add_column(
            sa.Column("snoozes", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("unique_key", sa.Text(), nullable=True))
    op.create_index(
        "vesper_jobs_unique_key_idx",
        "vesper_jobs",
        ["unique_key"],
        unique=True,
        postgresql_where=sa.text(UNIQUE_ACTIVE),
        sqlite_where=sa.text(UNIQUE_ACTIVE),
    )


def downgrade() -> None:
    op.drop_index("vesper_jobs_unique_key_idx", table_name="vesper_jobs")
    with op.batch_alter_table("vesper_jobs") as batch:
        batch.drop_column("unique_key")
        batch.drop_column("snoozes")
        batch.drop_column("cancel_requested_at")
