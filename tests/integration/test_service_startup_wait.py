"""Production processes (`vesper serve`, `vesper worker`) started before their database
can serve them: PostgreSQL down (nothing listens on the port), or up with a database
nobody migrated (production does not migrate at start). They wait; the first SIGTERM
ends the wait with exit 0 at once; an unmigrated schema is named, not taken for an
outage; the log names no database address."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import wait_until
from tests.integration.service import Service, free_port
from vesper.adapters.sql import migrate
from vesper.domain.errors import SCHEMA_NOT_MIGRATED
from vesper.testing import postgres as pg

pytestmark = pytest.mark.slow

LEDGER_APP = "tests.integration.apps.ledger:app"
COMMANDS = {
    "serve": ("serve", "--app", LEDGER_APP),
    "worker": ("worker", "--processes", "1", "--app", LEDGER_APP),
}
PASSWORD = "not-shown-anywhere"


@pytest.fixture
def unmigrated_url() -> Iterator[str]:
    """A PostgreSQL database that exists and answers, with no vesper table in it."""
    admin = pg.admin_url()
    pg.require_server(admin)
    with pg.scratch_database(admin, prefix="vesper_unmigrated_") as url:
        yield url


def _down_env(port: int) -> dict[str, str]:
    return {
        "APP_ENV": "production",
        "VESPER_STORAGE": "postgres",
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(port),  # nothing listens there: connection refused
        "DB_USER": "vesper",
        "DB_PASSWORD": PASSWORD,
    }


def _unmigrated_env(url: str) -> dict[str, str]:
    return {"APP_ENV": "production", "VESPER_DATABASE_URL": url}


def _start(env: dict[str, str], command: str, tmp_path: Path) -> Service:
    env = {**env, "WORKERS": "2", "VESPER_TEST_LEDGER": str(tmp_path / "ledger")}
    return Service(env, tmp_path / f"{command}.log", command=COMMANDS[command])


def _sigterm_exits_at_once(service: Service) -> None:
    started = time.monotonic()
    service.popen.send_signal(signal.SIGTERM)
    code = service.popen.wait(timeout=10)
    elapsed = time.monotonic() - started
    assert (code, elapsed < 2.0) == (0, True), f"exit {code} after {elapsed:.2f}s"
    assert "Traceback" not in service.output()


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_sigterm_ends_the_wait_for_a_database_that_is_down(command: str, tmp_path: Path) -> None:
    service = _start(_down_env(free_port()), command, tmp_path)
    try:
        wait_until(
            lambda: "store not reachable (attempt 2)" in service.output(),
            timeout=30,
            what="the second retry line",
        )
        _sigterm_exits_at_once(service)
    finally:
        service.stop()


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_sigterm_ends_the_wait_for_an_unmigrated_database(
    command: str, unmigrated_url: str, tmp_path: Path
) -> None:
    service = _start(_unmigrated_env(unmigrated_url), command, tmp_path)
    try:
        wait_until(
            lambda: SCHEMA_NOT_MIGRATED in service.output(), timeout=30, what="the schema line"
        )
        _sigterm_exits_at_once(service)
    finally:
        service.stop()


def test_serve_names_an_unmigrated_schema_in_ready_and_post_jobs(
    unmigrated_url: str, tmp_path: Path
) -> None:
    service = _start(_unmigrated_env(unmigrated_url), "serve", tmp_path)
    try:
        wait_until(lambda: SCHEMA_NOT_MIGRATED in service.output(), timeout=30, what="start")
        ready = service.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["error"] == SCHEMA_NOT_MIGRATED
        assert ready.json()["detail"]["reason"] == "schema_not_migrated"
        posted = service.post("/jobs", json={"type": "record"})
        assert posted.status_code == 503
        assert posted.headers.get("Retry-After")
        assert posted.json()["error"] == SCHEMA_NOT_MIGRATED
        assert "store not reachable" not in service.output()
    finally:
        service.stop()


def test_worker_logs_an_unmigrated_schema_once_while_it_waits(
    unmigrated_url: str, tmp_path: Path
) -> None:
    service = _start(_unmigrated_env(unmigrated_url), "worker", tmp_path)
    try:
        wait_until(lambda: SCHEMA_NOT_MIGRATED in service.output(), timeout=30, what="the line")
        time.sleep(4.0)  # the retries after 1 s and 3 s: two more failed attempts
        output = service.output()
        assert output.count(SCHEMA_NOT_MIGRATED) == 1, output
        assert "store not reachable" not in output
        assert "relation" not in output  # no SQL error text
        migrate(unmigrated_url)  # what the operator does: the worker starts, no restart
        wait_until(lambda: "started" in service.output(), timeout=30, what="the worker to start")
        _sigterm_exits_at_once(service)
        assert service.output().count(SCHEMA_NOT_MIGRATED) == 1
    finally:
        service.stop()


def test_production_log_names_no_database_address_or_password(tmp_path: Path) -> None:
    port = free_port()
    service = _start(_down_env(port), "worker", tmp_path)
    try:
        wait_until(
            lambda: "store not reachable (attempt 2)" in service.output(),
            timeout=30,
            what="the second retry line",
        )
        wait_until(lambda: "vesper.listen" in service.output(), timeout=10, what="LISTEN's line")
        _sigterm_exits_at_once(service)
        output = service.output()
        for secret in ("127.0.0.1", str(port), PASSWORD):
            assert secret not in output, f"{secret!r} in the log:\n{output}"
        assert 'store: postgres database \\"vesper\\"' in output  # kind and name only
    finally:
        service.stop()


def test_alembic_lines_stay_out_of_the_log(tmp_path: Path) -> None:
    env = {"VESPER_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}  # migrated at start
    service = _start(env, "worker", tmp_path)
    try:
        wait_until(lambda: "started" in service.output(), timeout=30, what="the worker")
        _sigterm_exits_at_once(service)
        assert "alembic.runtime" not in service.output()  # its loggers: plugins, migration
    finally:
        service.stop()
