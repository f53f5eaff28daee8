"""The store a command uses: chosen by VESPER_DATABASE_URL's scheme alone, named in one
line at start, migrated by `vesper migrate` (a plugin's hook: test_storage_plugin.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from tests.integration.harness import REPO, read_ledger, starts, wait_until
from tests.integration.service import Service
from vesper.adapters.sql.migrate import alembic_config
from vesper.entrypoints.app import App
from vesper.testing import postgres as pg

# what `vesper migrate` applies to an empty database: every revision, up to the head
_SCRIPTS = ScriptDirectory.from_config(alembic_config())
HEAD = _SCRIPTS.get_current_head()
APPLIED_ALL = f"applied {len(list(_SCRIPTS.walk_revisions()))} migrations (base -> {HEAD})"

LEDGER_APP = "tests.integration.apps.ledger:app"


def vesper(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`vesper <args>` with only `env` (and PATH) set: nothing selects a store by accident."""
    return subprocess.run(
        [sys.executable, "-m", "vesper.entrypoints.cli", *args],
        cwd=REPO,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_migrate_says_what_it_applied_then_that_it_is_up_to_date(tmp_path: Path) -> None:
    env = {"VESPER_DATABASE_URL": f"sqlite:///{tmp_path / 'q.db'}"}
    first = vesper("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == APPLIED_ALL
    assert first.stderr.strip() == f"vesper: store: sqlite {tmp_path / 'q.db'}"
    again = vesper("migrate", env=env)
    assert (again.returncode, again.stdout.strip()) == (0, f"up to date at {HEAD}")
    assert "alembic.runtime" not in first.stderr + again.stderr


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    admin = pg.admin_url()
    pg.require_server(admin)
    with pg.scratch_database(admin, prefix="vesper_url_") as url:
        yield url


def test_migrate_with_a_postgres_url_alone_migrates_postgres(empty_postgres: str) -> None:
    result = vesper("migrate", env={"VESPER_DATABASE_URL": empty_postgres})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == APPLIED_ALL
    name = empty_postgres.rsplit("/", 1)[1]
    assert result.stderr.strip() == f'vesper: store: postgres database "{name}" at 127.0.0.1:5432'
    assert pg.table_exists(empty_postgres, "vesper_jobs")


@pytest.mark.slow
def test_a_worker_selected_by_its_url_alone_listens(postgres_database: str, tmp_path: Path) -> None:
    pg.truncate(postgres_database)
    ledger = tmp_path / "ledger"
    env = {
        "VESPER_DATABASE_URL": postgres_database,
        "VESPER_POLL_INTERVAL": "30s",  # a job found by polling would wait 24-30 s
        "VESPER_TEST_LEDGER": str(ledger),
    }
    worker = Service(
        env, tmp_path / "worker.log", command=("worker", "--processes", "1", "--app", LEDGER_APP)
    )
    producer = App({"VESPER_DATABASE_URL": postgres_database})  # another process's submit
    try:
        wait_until(lambda: "started" in worker.output(), timeout=30, what="the worker")
        time.sleep(1.0)  # its first claim found nothing: it now waits for a wake-up
        producer.enqueue("record", {})
        submitted = time.monotonic()
        wait_until(lambda: starts(read_ledger(ledger)), timeout=20, what="the job to start")
        assert time.monotonic() - submitted < 5.0
        assert "store: postgres database" in worker.output()
    finally:
        producer.close()
        worker.stop()
