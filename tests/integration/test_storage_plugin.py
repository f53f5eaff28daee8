"""A storage adapter from another package (tests/plugin_site/vesper_teststore: a SQLite
store written against `vesper.store` alone), found through the `vesper.storage` entry
points: it passes the contract suite, VESPER_STORAGE alone selects it, `vesper migrate`
runs its hook, and its notifier wakes a worker in another process without polling."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.harness import REPO, read_ledger, starts, wait_until
from tests.integration.service import Service
from vesper.application.ports import Store, StoreOptions, store_notifier
from vesper.domain.bulk import BulkAction, BulkFilter
from vesper.domain.states import Status
from vesper.domain.submission import JobRequest
from vesper.entrypoints.app import App
from vesper.entrypoints.container import build_container
from vesper.entrypoints.settings import storage_plugins
from vesper.testing import StoreContract, StoreFactory, StoreOpener, scratch_database
from vesper.testing.fixtures import claim, failure

PLUGIN_SITE = Path(__file__).resolve().parents[1] / "plugin_site"
LEDGER_APP = "tests.integration.apps.ledger:app"
MODULES_APP = "tests.integration.apps.modules:app"


@pytest.fixture(autouse=True)
def installed_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGIN_SITE))


class HostClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@contextmanager
def open_teststore(url: str) -> Iterator[Store]:
    """The plugin's factory, as the entry point names it (module level: the contract's
    multi-process tests send it to child processes)."""
    from vesper_teststore import open_store  # noqa: PLC0415 (on sys.path only in tests)

    store = open_store(url, HostClock(), StoreOptions())
    try:
        yield store
    finally:
        store.close()


def plugin_url(sqlite_url: str) -> str:
    return "teststore" + sqlite_url.removeprefix("sqlite")  # teststore:///tmp/.../x.db


@pytest.fixture
def database() -> Iterator[str]:
    with scratch_database("sqlite://") as url:
        yield plugin_url(url)


class TestPluginStore(StoreContract):
    @pytest.fixture
    def store_factory(self) -> Iterator[StoreFactory]:
        with ExitStack() as scratches:

            def fresh() -> StoreOpener:
                url = scratches.enter_context(scratch_database("sqlite://"))
                return functools.partial(open_teststore, plugin_url(url))

            yield fresh


def plugin_env(database: str, **extra: str) -> dict[str, str]:
    return {
        "VESPER_STORAGE": "teststore",
        "VESPER_DATABASE_URL": database,
        "PYTHONPATH": os.pathsep.join([str(PLUGIN_SITE), str(REPO)]),
        **extra,
    }


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


def tables(database: str) -> set[str]:
    path = database.removeprefix("teststore://")
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_vesper_storage_alone_selects_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    # a short directory: the wake-up socket's path must fit a Unix socket address (108
    # bytes), which pytest's tmp_path under a parallel run's worker directory may not
    with tempfile.TemporaryDirectory(prefix="vesper-", dir="/tmp") as short:
        here = Path(short)
        monkeypatch.chdir(here)  # the plugin's default file lands here
        assert "teststore" in storage_plugins()
        container = build_container({"VESPER_STORAGE": "teststore"})
        try:
            store = container.store()
            assert type(store).__module__ == "vesper_teststore"
            assert (here / "teststore.db").exists()
            assert store_notifier(store) is not None
            subscription = container.job_listener()  # the container subscribes to any notifier
            assert subscription is not None
            assert subscription.connected()
        finally:
            container.shutdown_resources()
        assert list((here / "teststore.db-wake").iterdir()) == []  # closed: socket removed
        monkeypatch.undo()  # out of the directory before it goes


def test_the_factory_gets_the_pool_settings(database: str) -> None:
    env = {**plugin_env(database), "VESPER_DB_POOL_SIZE": "3", "VESPER_DB_MAX_OVERFLOW": "1"}
    container = build_container(env)
    try:
        assert container.store().capacity == 4  # type: ignore[attr-defined]
        assert container.store_gate().capacity == 4
    finally:
        container.shutdown_resources()


def test_migrate_runs_the_plugin_s_hook(database: str) -> None:
    env = plugin_env(database, VESPER_AUTO_MIGRATE="0")
    unmigrated = vesper("enqueue", "hello", env=env)
    assert unmigrated.returncode == 1
    assert unmigrated.stderr.strip().splitlines()[-1] == (
        "vesper: database schema is not migrated (run `vesper migrate`)"
    )
    assert "vesper_jobs" not in tables(database)

    first = vesper("migrate", env=env)
    assert (first.returncode, first.stdout.strip()) == (0, "teststore: created the schema")
    assert {"vesper_jobs", "vesper_workers"} <= tables(database)
    again = vesper("migrate", env=env)
    assert (again.returncode, again.stdout.strip()) == (0, "teststore: the schema is up to date")

    enqueued = vesper("enqueue", "hello", "--payload", '{"a": 1}', env=env)
    assert enqueued.returncode == 0, enqueued.stderr
    assert json.loads(enqueued.stdout)["type"] == "hello"


@pytest.mark.slow
def test_the_notifier_wakes_a_worker_in_another_process(database: str, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    env = plugin_env(
        database,
        VESPER_POLL_INTERVAL="30s",  # a job found by polling would wait up to 30 s
        VESPER_TEST_LEDGER=str(ledger),
    )
    worker = Service(
        env, tmp_path / "worker.log", command=("worker", "--processes", "1", "--app", LEDGER_APP)
    )
    producer = App({k: v for k, v in env.items() if k != "PYTHONPATH"})  # this process
    try:
        wait_until(lambda: "started" in worker.output(), timeout=30, what="the worker")
        time.sleep(1.0)  # its first claim found nothing: it now waits for a wake-up
        producer.enqueue("record", {})
        submitted = time.monotonic()
        wait_until(lambda: starts(read_ledger(ledger)), timeout=20, interval=0.02, what="start")
        latency = time.monotonic() - submitted
        print(f"picked up {latency:.3f} s after the submit (poll interval 30 s)")
        assert latency < 5.0, latency
        assert "store: teststore (a plugin)" in worker.output()
    finally:
        producer.close()
        worker.stop()


@pytest.mark.slow
def test_serve_with_a_plugin_store_loads_no_sql_package_nor_alembic(
    database: str, tmp_path: Path
) -> None:
    report = tmp_path / "modules.json"
    env = plugin_env(database, VESPER_TEST_MODULES=str(report), VESPER_POLL_INTERVAL="200ms")
    service = Service(env, tmp_path / "serve.log", command=("serve", "--app", MODULES_APP))
    try:
        service.wait_ready()
        assert service.post("/jobs", json={"type": "modules"}).status_code == 201
        wait_until(report.exists, timeout=20, what="the consumer's report")
        loaded = json.loads(report.read_text())
    finally:
        service.stop()
    assert "vesper_teststore" in loaded  # the control: the report sees imports
    sql = [name for name in loaded if name.startswith(("vesper.adapters.sql.", "alembic"))]
    assert sql == []
    assert "vesper.adapters.sql" not in loaded


def test_an_unknown_storage_name_is_one_clear_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vesper.entrypoints.cli", "status"],
        cwd=REPO,
        env={**os.environ, "VESPER_STORAGE": "nosuchstore"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("vesper: VESPER_STORAGE='nosuchstore': expected one of")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("storage", ["teststore", "sqlite"])
def test_a_bulk_retry_publishes_to_the_notifier(database: str, storage: str) -> None:
    """Jobs a bulk retry made due wake workers of other processes, as submits do: the
    plugin and vesper's SQLite store publish once a batch retried jobs."""
    url = database if storage == "teststore" else database.replace("teststore", "sqlite", 1)
    container = build_container(plugin_env(url, VESPER_STORAGE=storage))
    try:
        jobs = container.store().jobs
        notifier = store_notifier(container.store())
        assert notifier is not None
        heard = threading.Semaphore(0)
        subscription = notifier.subscribe(heard.release)

        def quiet() -> None:  # every wake-up so far received (bounded: 50 at most)
            for _ in range(50):
                if not heard.acquire(timeout=0.5):
                    return
            raise AssertionError("the notifier never went quiet")

        try:
            container.submit_jobs()([JobRequest(type="t", payload={}, max_retries=0)] * 3)
            now = jobs.now()
            jobs.fail([failure(job, None) for job in claim(jobs, now=now)], now=now)
            quiet()
            done = container.bulk_jobs()(BulkAction.RETRY, BulkFilter(status=Status.DLQ))
            assert done.changed == 3
            assert heard.acquire(timeout=10), "the bulk retry published nothing"
        finally:
            subscription.close()
    finally:
        container.shutdown_resources()
