"""The PostgreSQL store's connections are admitted by the process's store gate: a
caller with a deadline (an HTTP request in `vesper serve`, whose workers share the
pool) waits for a connection no longer than what is left of it, and gets
StoreUnavailable naming the busy pool. The gate admits one call per connection the
store reports, so an admitted call never waits in the pool after its slot."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from vesper.adapters.sql import open_store
from vesper.application.ports import StoreOptions, store_capacity
from vesper.application.store_gate import StoreGate
from vesper.domain.errors import StoreUnavailable
from vesper.domain.query import JobPage, JobQuery


def test_a_caller_past_its_deadline_gets_store_unavailable_while_the_pool_is_busy(
    postgres_database: str,
) -> None:
    store = open_store(postgres_database, None, StoreOptions(pool_size=1, max_overflow=0))
    gate = StoreGate(store_capacity(store))
    assert gate.capacity == 1
    db = store._databases[0]  # type: ignore[attr-defined]
    holding = threading.Event()
    release = threading.Event()

    def hold(conn: object) -> None:
        holding.set()
        release.wait(30)

    holder = threading.Thread(target=gate.call, args=(lambda: db.read(hold),))
    holder.start()
    try:
        assert holding.wait(10)
        with pytest.raises(StoreUnavailable, match="all 1 connections stayed busy"):
            gate.call(lambda: store.jobs.find(JobQuery()), deadline=time.monotonic() + 0.2)
        # a deadline already past does not wait at all
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            gate.call(lambda: store.jobs.find(JobQuery()), deadline=time.monotonic() - 1)
        assert time.monotonic() - started < 0.1
    finally:
        release.set()
        holder.join(10)
    # the connection is back: the next caller gets it, with or without a deadline
    assert gate.call(lambda: db.read(lambda conn: conn.execute(text("SELECT 1")).scalar())) == 1
    try:
        page = gate.call(lambda: store.jobs.find(JobQuery()), deadline=time.monotonic() + 1)
        assert isinstance(page, JobPage)
    finally:
        store.close()
