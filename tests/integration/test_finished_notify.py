"""PostgreSQL: the statements that finish jobs notify `vesper_finished` only while some
process listens for finished jobs (its listener holds the waiters' advisory locks), and
then once per statement, whatever the number of jobs it finished."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from vesper.adapters.sql.notify import (
    FINISHED_CHANNEL,
    WAITERS_LOCK_SQL,
    PostgresJobListener,
    libpq_conninfo,
)
from vesper.application.execution import lease_of
from vesper.application.policies import Policies
from vesper.application.ports import JobRepository
from vesper.application.submit import new_job_id
from vesper.domain.submission import JobRequest, Limits, prepare
from vesper.entrypoints.container import build_container

pytestmark = pytest.mark.postgres


@pytest.fixture
def jobs(postgres_database: str) -> Iterator[JobRepository]:
    container = build_container(
        {"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": postgres_database}
    )
    try:
        yield container.store().jobs
    finally:
        container.shutdown_resources()


def _finish(jobs: JobRepository, count: int) -> None:
    """Queue `count` jobs, claim them, complete them in one call (one statement)."""
    jobs.submit(
        [
            prepare(
                JobRequest(type="t"), job_id=new_job_id(), limits=Limits(), default_max_retries=0
            )
            for _ in range(count)
        ]
    )
    claimed = jobs.claim(worker_id="w", limit=count, lease=Policies().lease)
    assert len(claimed) == count
    assert len(jobs.complete([lease_of(job) for job in claimed])) == count


def _heard(conn: psycopg.Connection[Any]) -> int:
    return sum(1 for _ in conn.notifies(timeout=1.0))


def test_finished_jobs_are_notified_only_while_a_process_listens(
    postgres_database: str, jobs: JobRepository
) -> None:
    with psycopg.connect(libpq_conninfo(postgres_database), autocommit=True) as observer:
        observer.execute(f"LISTEN {FINISHED_CHANNEL}")
        _finish(jobs, 3)
        assert _heard(observer) == 0  # nobody waits: no NOTIFY on the hot path

        woken = threading.Semaphore(0)
        listener = PostgresJobListener(
            postgres_database,
            woken.release,
            channel=FINISHED_CHANNEL,
            after_listen=WAITERS_LOCK_SQL,
        ).start()
        try:
            assert listener.up.wait(10)
            assert woken.acquire(timeout=5)  # the catch-up signal after connecting
            _finish(jobs, 3)
            assert _heard(observer) == 1  # one per statement, not one per job
            assert woken.acquire(timeout=5), "the waiting process was not woken"
        finally:
            listener.stop()

        _finish(jobs, 3)  # the listener's connection (and its locks) gone
        assert _heard(observer) == 0
