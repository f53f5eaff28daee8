"""A unique key is unique per queue: vesper_jobs_unique_key_idx on (unique_key, queue).

Revision ID: 0007_i16_unique_per_queue
Revises: 0006_i20_sqlite_claim_index
Create Date: 2026-12-06

The design makes a submission return the active job holding its unique key in the same
queue; revision 0003_i16_control indexed the key alone, so a job in one queue returned
(and blocked) the jobs of every other queue with that key. The index keeps its name and
its partial predicate, with the queue added after the key: every holder lookup gives
the key, and the key, many and distinct where queues are few, is the column that
narrows it (PostgreSQL's lookup, `unique_key = ANY(...)`, is an index condition on it).

Upgrading cannot fail: what was unique per key is unique per (key, queue). The index is
dropped and created again in the migration's transaction: writes to vesper_jobs wait
while it builds, which reads the active jobs with a key only. Plain DROP INDEX and CREATE
UNIQUE INDEX on SQLite too: batch_alter_table would copy the table, and alembic rebuilds
the other indexes from reflection, which loses details (revision 0006).

Downgrading restores the index on the key alone. It fails (a unique violation, nothing
changed) while two active jobs in different queues share a key, which this revision
allows: finish, cancel or delete one of them first.
"""

from __future__ import annotations

from alembic import op

revision = "0007_i16_unique_per_queue"
down_revision = "0006_i20_sqlite_claim_index"
branch_labels = None
depends_on = None

# as in 0003_i16_control; spelled as the store's UNIQUE_ACTIVE_SQL
UNIQUE_ACTIVE = "unique_key IS NOT NULL AND status IN ('pending', 'failed', 'processing')"


def _create(columns: str) -> str:
    return (
        f"CREATE UNIQUE INDEX vesper_jobs_unique_key_idx ON vesper_jobs ({columns}) "
        f"WHERE {UNIQUE_ACTIVE}"
    )


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS vesper_jobs_unique_key_idx")
    op.execute(_create("unique_key, queue"))


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS vesper_jobs_unique_key_idx")
    op.execute(_create("unique_key"))
