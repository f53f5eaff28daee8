"""Retention for a SQL store: the oldest finished jobs of each status deleted in short
write transactions, one per status and batch, so that no lock is held for long."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import TextClause

from vesper.adapters.sqlcore.common import Database
from vesper.adapters.sqlcore.tables import FINISHED_SQL, utc_datetime
from vesper.domain.retention import check_ages
from vesper.domain.states import Status


def prune_statement(source: str = "vesper_jobs") -> TextClause:
    """DELETE the oldest finished jobs of `:status` that finished by `:cutoff`, at most
    `:limit`, RETURNING their status. `source` names the table the ids are read from
    (SQLite adds `INDEXED BY vesper_jobs_finished_idx` to it)."""
    return text(
        f"""
DELETE FROM vesper_jobs WHERE id IN (
    SELECT id FROM {source}
    WHERE {FINISHED_SQL} AND status = :status AND finished_at <= :cutoff
    ORDER BY finished_at
    LIMIT :limit
)
RETURNING status
"""
    ).bindparams(bindparam("cutoff", type_=utc_datetime()))


class SqlPruning:
    """`prune` for a repository that sets `_db` and `_at` (its clock, read inside the
    unit of work) and may set `_prune` to its own statement (see prune_statement)."""

    _db: Database
    _prune: TextClause = prune_statement()

    def _at(self, now: datetime | None) -> datetime:
        raise NotImplementedError

    def prune(
        self,
        older_than: Mapping[Status, timedelta],
        *,
        limit: int,
        now: datetime | None = None,
    ) -> dict[Status, int]:
        check_ages(older_than)
        counts: dict[Status, int] = {}
        left = limit
        for status, age in older_than.items():  # one short write transaction per status
            if left <= 0:
                break
            deleted = self._prune_status(status, age, left, now)
            if deleted:
                counts[status] = deleted
                left -= deleted
        return counts

    def _prune_status(
        self, status: Status, age: timedelta, limit: int, now: datetime | None
    ) -> int:
        def work(conn: Connection) -> int:
            # the cutoff is read under the write lock, like every time a write stamps
            params = {"status": status.value, "cutoff": self._at(now) - age, "limit": limit}
            return len(conn.execute(self._prune, params).all())

        return self._db.statement(work)
