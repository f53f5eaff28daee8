"""A queue's row held by a claimer that went silent (its connection cut inside the
claim's transaction) stalls that queue only: the others' claims skip it after
QUEUE_LOCK_WAIT_MS, go on with the other queues, and record their outcomes.

Seen in the soak: a black-holed worker held a limited queue's row, and every claim in
the fleet, which visits that queue, waited on it for the 5 s of the black-hole.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import cast

import psycopg
import pytest

from vesper.adapters.sql import open_store
from vesper.adapters.sqlcore.queues import QUEUE_LOCK_WAIT_MS
from vesper.application.ports import QueueingCompletingJobRepository
from vesper.domain.job import LeaseRef
from vesper.domain.queues import QueueChange
from vesper.testing import postgres as pg
from vesper.testing.fixtures import new_job

LEASE = timedelta(seconds=30)


@pytest.fixture
def jobs(postgres_database: str) -> Iterator[QueueingCompletingJobRepository]:
    pg.truncate(postgres_database)
    store = open_store(postgres_database)
    yield cast(QueueingCompletingJobRepository, store.jobs)
    store.close()


@pytest.fixture
def held_row(postgres_database: str) -> Iterator[None]:
    """Queue "r"'s row locked by a transaction that says nothing more."""
    with psycopg.connect(postgres_database.replace("+psycopg", "")) as conn:
        conn.execute("SELECT * FROM vesper_queues WHERE name = 'r' FOR UPDATE")
        yield
        conn.rollback()


def _submit(jobs: QueueingCompletingJobRepository, queue: str, n: int) -> None:
    jobs.submit([new_job(queue=queue) for _ in range(n)])


def test_a_claim_skips_a_queue_whose_row_stays_locked(
    jobs: QueueingCompletingJobRepository, request: pytest.FixtureRequest
) -> None:
    jobs.configure_queue("r", QueueChange(rate="100/1s"))
    _submit(jobs, "r", 3)
    _submit(jobs, "default", 3)
    [first] = jobs.claim(worker_id="w", limit=1, lease=LEASE, queues=["default"])
    request.getfixturevalue("held_row")
    began = time.monotonic()
    claimed = jobs.claim(worker_id="w", limit=4, lease=LEASE)
    waited = time.monotonic() - began
    assert [j.queue for j in claimed] == ["default", "default"]
    assert QUEUE_LOCK_WAIT_MS / 1000 <= waited < QUEUE_LOCK_WAIT_MS / 1000 + 2
    # the completions of a batch whose claim takes from the held queue are recorded
    assert first.lease is not None
    done, more = jobs.complete_and_claim(
        [LeaseRef(job_id=first.id, token=first.lease.token)],
        worker_id="w",
        limit=2,
        lease=LEASE,
        queues=["r"],
    )
    assert [j.id for j in done] == [first.id]
    assert more == []
