"""The soak's evidence of deletions and insertions (the triggers of tests/faults/soak/
run.py) on a real PostgreSQL: a key's rows are ordered by the moments the rows were
inserted and deleted, which their statements' start times are not."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.faults.checker import check
from tests.faults.soak.run import TRIGGER, table_changes, table_rows
from vesper.application.execution import lease_of
from vesper.domain.submission import JobRequest
from vesper.entrypoints.app import App
from vesper.testing import postgres as pg

pytestmark = pytest.mark.postgres


def _conninfo(url: str) -> str:
    parts = make_url(url)
    return psycopg.conninfo.make_conninfo(
        host=parts.host, port=parts.port, user=parts.username, dbname=parts.database
    )


def test_an_insert_that_began_before_the_delete_freeing_its_key_comes_after_it() -> None:
    """Soak seed 21, I9: a batch INSERT began, waited on the lock of a row a prune was
    deleting, and meanwhile another prune freed a second key of the batch; the INSERT
    then created that key's new row with a created_at before the old row's deleted_at."""
    admin = pg.admin_url()
    pg.require_server(admin)
    with pg.scratch_database(admin, prefix="vesper_soak_") as url:
        app = App({"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": url})
        try:
            app.container.store()  # migrates
            conninfo = _conninfo(url)
            with psycopg.connect(conninfo, autocommit=True) as setup:
                setup.execute(TRIGGER)
            batch = [JobRequest(type="t", idempotency_key=k) for k in ("k1", "k2")]
            app.enqueue_many(batch)
            with psycopg.connect(conninfo) as holder, psycopg.connect(conninfo) as watch:
                holder.execute("DELETE FROM vesper_jobs WHERE idempotency_key = 'k1'")
                inserting = threading.Thread(target=app.enqueue_many, args=(batch,))
                inserting.start()
                deadline = time.monotonic() + 10
                while not watch.execute(  # the INSERT waits for k1's row
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE '%INSERT INTO vesper_jobs%'"
                ).fetchall():
                    assert time.monotonic() < deadline, "the INSERT never waited"
                    watch.rollback()
                    time.sleep(0.02)
                with psycopg.connect(conninfo, autocommit=True) as pruner:  # frees k2
                    pruner.execute("DELETE FROM vesper_jobs WHERE idempotency_key = 'k2'")
                holder.rollback()  # k1's row stays: the INSERT replays it
                inserting.join(10)
                assert not inserting.is_alive()
            rows = table_rows(conninfo)
        finally:
            app.close()
    k2 = sorted((r for r in rows if r["idempotency_key"] == "k2"), key=lambda r: r["seq"])
    assert [r["deleted_at"] is not None for r in k2] == [True, False]
    old, new = k2
    assert new["created_at"] < old["deleted_at"]  # the statements' times: inverted
    assert old["row_deleted_at"] < new["row_inserted_at"]  # the rows' moments: in order
    assert sum(1 for r in rows if r["idempotency_key"] == "k1") == 1
    assert check(rows, [], [], []).counts["I9_keys_with_rows_over_1"] == 0


def test_updates_of_finished_rows_are_logged_and_nothing_else_is() -> None:
    """The soak_changed trigger (I6, I16): a retry of a cancelled job and a result
    written over a done one are logged; a claim, a completion and a prune are not."""
    admin = pg.admin_url()
    pg.require_server(admin)
    with pg.scratch_database(admin, prefix="vesper_soak_") as url:
        app = App({"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": url})
        try:
            store = app.container.store().jobs  # migrates
            conninfo = _conninfo(url)
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(TRIGGER)
                done = app.enqueue("t", {}).id
                (claimed,) = store.claim(worker_id="w", limit=1, lease=timedelta(seconds=30))
                store.complete([lease_of(claimed)], results={done: '{"a": 1}'})
                cancelled = app.enqueue("t", {}).id
                store.cancel(cancelled)
                assert table_changes(conninfo) == []
                conn.execute(  # a late outcome over a recorded one
                    "UPDATE vesper_jobs SET result = '{\"a\": 2}' WHERE id = %s", (done,)
                )
                store.retry(cancelled)
                conn.execute("DELETE FROM vesper_jobs WHERE id = %s", (done,))
            changes = table_changes(conninfo)
        finally:
            app.close()
    assert [(c["job_id"], c["old_status"], c["new_status"]) for c in changes] == [
        (str(done), "done", "done"),
        (str(cancelled), "cancelled", "pending"),
    ]
