"""`SELECT vesper_enqueue(...)` from a real psql: a job a worker runs, and SQL errors that
name the argument."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from uuid import UUID

import pytest
from sqlalchemy.engine import make_url

import vesper
from vesper.domain.job import JobId
from vesper.domain.states import Status
from vesper.entrypoints.app import App
from vesper.entrypoints.service import build_runner
from vesper.testing import postgres as pg

pytestmark = pytest.mark.postgres

PSQL = shutil.which("psql")


@pytest.fixture
def database(postgres_database: str) -> str:
    if PSQL is None:
        pytest.fail("psql is not installed (Debian: postgresql-client)")
    pg.truncate(postgres_database)
    return postgres_database


def psql(url: str, sql: str) -> subprocess.CompletedProcess[str]:
    assert PSQL is not None
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return subprocess.run(
        [PSQL, conninfo, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_job_enqueued_from_psql_is_run_by_a_worker(database: str) -> None:
    done = psql(database, """SELECT vesper_enqueue('email', '{"to": "a@b"}')""")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    app = App({"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": database})
    payloads: list[dict[str, object]] = []

    @app.consumer("email")
    def email(job: vesper.Job) -> None:
        payloads.append(dict(job.payload))

    try:
        asyncio.run(asyncio.wait_for(build_runner(app).run(until_idle=True), 30))
        job = app.container.get_job()(JobId(UUID(job_id)))
        assert (job.status, job.type, job.priority) == (Status.DONE, "email", 0)
        assert payloads == [{"to": "a@b"}]
    finally:
        app.close()


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        ("vesper_enqueue('', '{}')", "type"),
        ("vesper_enqueue('   ', '{}')", "type"),
        ("vesper_enqueue(repeat('t', 201), '{}')", "type"),
        ("vesper_enqueue('email', '{}', 11)", "priority"),
        ("vesper_enqueue('email', '{}', -1)", "priority"),
        ("vesper_enqueue('email', '[1, 2]')", "payload"),
        ("vesper_enqueue('email', '\"text\"')", "payload"),
        ("vesper_enqueue('email', NULL)", "payload"),
        ("vesper_enqueue('email', jsonb_build_object('a', repeat('x', 1048576)))", "payload"),
        ("vesper_enqueue('email', '{}', queue => 'no spaces')", "queue"),
        ("vesper_enqueue('email', '{}', run_at => '1990-01-01Z')", "run_at"),
        ("vesper_enqueue('email', '{}', idempotency_key => '')", "idempotency_key"),
        ("vesper_enqueue('email', '{}', concurrency_key => '')", "concurrency_key"),
        ("vesper_enqueue('email', '{}', concurrency_key => repeat('k', 256))", "concurrency_key"),
        ("vesper_enqueue('email', '{}', concurrency_key => E'a\\tb')", "concurrency_key"),
    ],
)
def test_a_bad_argument_is_a_sql_error_naming_it(database: str, call: str, argument: str) -> None:
    result = psql(database, f"SELECT {call}")
    assert result.returncode != 0
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith(f"ERROR:  vesper_enqueue: {argument} "), result.stderr
    assert psql(database, "SELECT count(*) FROM vesper_jobs").stdout.strip() == "0"


def test_a_key_replays_its_job_and_refuses_other_arguments(database: str) -> None:
    call = "SELECT vesper_enqueue('email', '{\"n\": 1}', idempotency_key => 'k')"
    first = psql(database, call)
    again = psql(database, call)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert first.stdout.strip() == again.stdout.strip()
    other = psql(database, call.replace('"n": 1', '"n": 2'))
    assert other.returncode != 0
    assert "vesper_enqueue: idempotency_key 'k' is bound to a job" in other.stderr


def test_a_job_from_sql_exists_only_if_its_transaction_commits(database: str) -> None:
    rolled_back = psql(database, "BEGIN; SELECT vesper_enqueue('email', '{}'); ROLLBACK;")
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert psql(database, "SELECT count(*) FROM vesper_jobs").stdout.strip() == "0"
    # and from a trigger's point of view: in the same transaction as the caller's write
    committed = psql(
        database,
        "BEGIN; SELECT vesper_enqueue('email', '{}', 5, 'default', now() + interval '1 hour'); COMMIT;",
    )
    assert committed.returncode == 0, committed.stderr
    row = psql(database, "SELECT type, priority, status, run_at > created_at FROM vesper_jobs")
    assert row.stdout.strip() == "email|5|pending|t"


def test_a_job_from_sql_goes_to_its_queue_with_its_concurrency_key(database: str) -> None:
    call = "SELECT vesper_enqueue('email', '{}', queue => 'mail.eu', concurrency_key => 't-1')"
    result = psql(database, call)
    assert result.returncode == 0, result.stderr
    row = psql(database, "SELECT queue, concurrency_key FROM vesper_jobs")
    assert row.stdout.strip() == "mail.eu|t-1"
    # without them: the default queue and no key, as from the API
    assert psql(database, "SELECT vesper_enqueue('email', '{}')").returncode == 0
    rows = psql(database, "SELECT queue, concurrency_key IS NULL FROM vesper_jobs ORDER BY seq")
    assert rows.stdout.split() == ["mail.eu|f", "default|t"]


def test_a_concurrency_key_is_part_of_a_replay_only_when_given(database: str) -> None:
    keyed = "SELECT vesper_enqueue('email', '{}', idempotency_key => 'k', concurrency_key => 'a')"
    first = psql(database, keyed)
    assert first.returncode == 0, first.stderr
    assert psql(database, keyed).stdout == first.stdout
    other = psql(database, keyed.replace("'a'", "'b'"))
    assert "vesper_enqueue: idempotency_key 'k' is bound to a job" in other.stderr
