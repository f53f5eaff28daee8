"""Issue 16: a job's `result`, and the index prunes read finished jobs by.

Revision ID: 0002_i16_retention
Revises: 0001
Create Date: 2026-01-20

`result` is JSON text on SQLite, `json` on PostgreSQL (as `payload`: the text is kept
verbatim). The index holds finished jobs only (partial), by status and finished_at, so
that a prune finds the oldest ones of a status without reading any other row, and the
claim path's rows cost it nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002_i16_retention"
down_revision = "0001"
branch_labels = None
depends_on = None

FINISHED = "status IN ('done', 'dlq', 'cancelled')"


def upgrade() -> None:
    op.add_column(
        "vesper_jobs",
        sa.Column("result", postgresql.JSON().with_variant(sa.Text(), "sqlite"), nullable=True),
    )
    op.create_index(
        "vesper_jobs_finished_idx",
        "vesper_jobs",
        ["status", "finished_at"],
        postgresql_where=sa.text(FINISHED),
        sqlite_where=sa.text(FINISHED),
    )


def downgrade() -> None:
    op.drop_index("vesper_jobs_finished_idx", table_name="vesper_jobs")
    op.drop_column("vesper_jobs", "result")
