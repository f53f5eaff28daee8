"""The PostgreSQL store's connection gate: a caller with a deadline (an HTTP request in
`vesper serve`, whose workers share the pool) waits for a connection no longer than
what is left of it, and gets StoreUnavailable naming the busy pool."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from vesper.adapters.sql.engines import CONNECTION_DEADLINE, Database, open_engine, sql_url
from vesper.domain.errors import StoreUnavailable


def test_a_caller_past_its_deadline_gets_store_unavailable_while_the_pool_is_busy(
    postgres_database: str,
) -> None:
    db = Database(open_engine(sql_url(postgres_database), pool_size=1, max_overflow=0))
    holding = threading.Event()
    release = threading.Event()

    def hold(conn: object) -> None:
        holding.set()
        release.wait(30)

    holder = threading.Thread(target=db.read, args=(hold,))
    holder.start()
    try:
        assert holding.wait(10)
        token = CONNECTION_DEADLINE.set(time.monotonic() + 0.2)
        try:
            with pytest.raises(StoreUnavailable, match="all 1 connections stayed busy"):
                db.read(lambda conn: conn.execute(text("SELECT 1")).scalar())
            # a deadline already past does not wait at all
            CONNECTION_DEADLINE.set(time.monotonic() - 1)
            with pytest.raises(StoreUnavailable):
                db.read(lambda conn: conn.execute(text("SELECT 1")).scalar())
        finally:
            CONNECTION_DEADLINE.reset(token)
    finally:
        release.set()
        holder.join(10)
    # the connection is back: the next caller gets it, with or without a deadline
    assert db.read(lambda conn: conn.execute(text("SELECT 1")).scalar()) == 1
    db.dispose()
