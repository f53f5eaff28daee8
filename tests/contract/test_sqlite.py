"""The contract suite against SQLite: a fresh file per store, built as production builds it."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.contract.caller import sqlalchemy_transactions
from vesper.application.ports import Store
from vesper.entrypoints.container import build_container
from vesper.testing import CallerTransactions, StoreContract, StoreFactory, StoreOpener


@contextmanager
def open_sqlite_store(url: str) -> Iterator[Store]:
    """A handle on the SQLite file at `url` (module level: child processes unpickle it)."""
    container = build_container({"VESPER_STORAGE": "sqlite", "VESPER_DATABASE_URL": url})
    try:
        yield container.store()
    finally:
        container.shutdown_resources()


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        def fresh() -> StoreOpener:
            return functools.partial(
                open_sqlite_store, f"sqlite:///{tmp_path / uuid.uuid4().hex}.db"
            )

        return fresh

    @pytest.fixture
    def caller_transactions(self) -> Iterator[CallerTransactions]:
        yield from sqlalchemy_transactions()
