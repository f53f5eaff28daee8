"""The contract suite against PostgreSQL, built as production builds it.

One scratch database per test session (dropped at the end); every store the suite opens
starts with its tables emptied. Unreachable server: skipped outside CI, failed with CI=true.
An outage is the database refusing connections after its sessions were terminated, as a
failover or an administrator would leave it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.contract.caller import sqlalchemy_transactions
from vesper.application.ports import Store
from vesper.entrypoints.container import build_container
from vesper.testing import (
    CallerTransactions,
    StoreContract,
    StoreFactory,
    StoreOpener,
    StoreOutage,
)
from vesper.testing import postgres as pg

pytestmark = pytest.mark.postgres


@contextmanager
def open_postgres_store(url: str) -> Iterator[Store]:
    """A handle on the database at `url` (module level: child processes unpickle it)."""
    container = build_container({"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": url})
    try:
        yield container.store()
    finally:
        container.shutdown_resources()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    admin = pg.admin_url()
    pg.require_server(admin)
    with pg.scratch_database(admin) as url:
        with open_postgres_store(url):
            pass  # the first store migrates the new database
        missing = [t for t in pg.VESPER_TABLES if not pg.table_exists(url, t)]
        assert not missing, f"opening a store did not create {missing}"
        yield url


@contextmanager
def database_gone(url: str) -> Iterator[None]:
    """The database at `url` refuses new connections and its sessions are ended, until
    exit (through the admin URL's server)."""
    name = make_url(url).database
    admin = create_engine(pg.admin_url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %(n)s",
                {"n": name},
            )
        try:
            yield
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    finally:
        admin.dispose()


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store_factory(self, postgres_url: str) -> StoreFactory:
        def fresh() -> StoreOpener:
            pg.truncate(postgres_url)
            return functools.partial(open_postgres_store, postgres_url)

        return fresh

    @pytest.fixture
    def store_outage(self, postgres_url: str) -> StoreOutage:
        # every store of this module opens the one scratch database
        return StoreOutage(cut=lambda _opener: database_gone(postgres_url))

    @pytest.fixture
    def caller_transactions(self) -> Iterator[CallerTransactions]:
        yield from sqlalchemy_transactions()
