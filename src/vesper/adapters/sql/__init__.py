"""SQL stores (SQLite and PostgreSQL) on SQLAlchemy Core."""

from __future__ import annotations

from vesper.application.ports import Clock, Store


def open_store(url: str, *, clock: Clock | None = None, migrate: bool = True) -> Store:
    raise NotImplementedError("the SQL stores are being written")  # replaced by the adapter
