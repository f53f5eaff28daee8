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
    FINISHED_PAYLOAD_IDS,
    WAITERS_LOCK_SQL,
    PostgresJobListener,
    finished_ids,
    libpq_conninfo,
)
from vesper.application.execution import lease_of
from vesper.application.policies import Policies
from vesper.application.ports import JobRepository
from vesper.application.submit import new_job_id
from vesper.domain.job import JobId
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


def _finish(jobs: JobRepository, count: int) -> list[JobId]:
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
    return [job.id for job in claimed]


def _heard(conn: psycopg.Connection[Any]) -> int:
    return len(_payloads(conn))


def _payloads(conn: psycopg.Connection[Any]) -> list[str]:
    return [note.payload for note in conn.notifies(timeout=1.0)]


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
            finished = _finish(jobs, 3)
            payloads = _payloads(observer)
            assert len(payloads) == 1  # one per statement, not one per job
            assert woken.acquire(timeout=5), "the waiting process was not woken"
            # it names the jobs, so that their waiters read only those
            assert sorted(finished_ids(payloads) or []) == sorted(finished)

            more = FINISHED_PAYLOAD_IDS + 1  # too many to name: names none
            _finish(jobs, more)
            payloads = _payloads(observer)
            assert payloads == [""]
            assert finished_ids(payloads) is None
        finally:
            listener.stop()

        _finish(jobs, 3)  # the listener's connection (and its locks) gone
        assert _heard(observer) == 0
