"""The dashboard's per-minute chart: an index on finished_at (finished jobs only).

Revision ID: 0002_i19_ui
Revises: 0001
Create Date: 2026-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_i19_ui"
down_revision = "0001"
branch_labels = None
depends_on = None

FINISHED = "finished_at IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "vesper_jobs_finished_idx",
        "vesper_jobs",
        ["finished_at"],
        postgresql_where=sa.text(FINISHED),
        sqlite_where=sa.text(FINISHED),
    )


def downgrade() -> None:
    op.drop_index("vesper_jobs_finished_idx", table_name="vesper_jobs")
