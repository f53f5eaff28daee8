"""The contract suite against SQLite: a fresh file per store, built as production builds it.

An outage is another process holding the database's write lock for longer than the
store waits for it (SQLite's busy timeout); readers go on in WAL mode.
"""

from __future__ import annotations

import functools
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.contract.caller import sqlalchemy_transactions
from vesper.adapters.sql import engines
from vesper.application.ports import Store
from vesper.entrypoints.container import build_container
from vesper.testing import (
    CallerTransactions,
    CompleteAndClaimContract,
    CompleteContract,
    FreeStore,
    RecordAndClaimContract,
    StoreContract,
    StoreFactory,
    StoreOpener,
    StoreOutage,
)


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
    def store_outage(self, monkeypatch: pytest.MonkeyPatch) -> StoreOutage:
        return StoreOutage(
            cut=lambda opener: write_lock_held(opener, monkeypatch), reads_fail=False
        )

    @pytest.fixture
    def caller_transactions(self) -> Iterator[CallerTransactions]:
        yield from sqlalchemy_transactions()


@contextmanager
def open_free_sqlite_store(url: str) -> Iterator[Store]:
    """The SQLite store taking the port's freedoms, complete_and_claim kept."""
    with open_sqlite_store(url) as store:
        yield FreeStore(store, per_job_tokens=True, reordered=True, keep_complete_and_claim=True)


class TestASqliteStoreTakingThePortsFreedoms(
    CompleteAndClaimContract, RecordAndClaimContract, CompleteContract
):
    """complete_and_claim with a lease token per claimed job and the completed jobs in
    reverse order (the memory store's freedoms test has no complete_and_claim)."""

    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        def fresh() -> StoreOpener:
            url = f"sqlite:///{tmp_path / uuid.uuid4().hex}.db"
            return functools.partial(open_free_sqlite_store, url)

        return fresh


@contextmanager
def write_lock_held(opener: StoreOpener, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Another connection holds the write lock of `opener`'s file until exit.

    The store retries a locked database for SQLITE_RETRY_SECONDS (30 s) before it
    answers StoreUnavailable; the outage shortens that to one busy timeout (5 s) so that
    the test does not wait out the retries, and changes nothing else.
    """
    assert isinstance(opener, functools.partial)  # as store_factory makes it
    path = str(opener.args[0]).removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with monkeypatch.context() as patch:
            patch.setattr(engines, "SQLITE_RETRY_SECONDS", 0.0)
            yield
        holder.execute("ROLLBACK")
    finally:
        holder.close()
