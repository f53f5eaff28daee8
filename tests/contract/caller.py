"""The caller's transactions for the SQL stores' TransactionalSubmitContract: a SQLAlchemy
engine of the caller's own on the store's database (pysqlite's and psycopg's defaults)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from vesper.testing import CallerTransactions, StoreOpener


def sqlalchemy_transactions() -> Iterator[CallerTransactions]:
    """`engine.begin()` on the URL the opener opens (a functools.partial of it)."""
    engines: dict[str, Engine] = {}

    def begin(opener: StoreOpener) -> AbstractContextManager[Any]:
        url: str = opener.args[0]  # type: ignore[attr-defined]
        if url not in engines:
            engines[url] = create_engine(url)
        return engines[url].begin()

    try:
        yield begin
    finally:
        for engine in engines.values():
            engine.dispose()
