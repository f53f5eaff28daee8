"""`app.enqueue_many` takes any number of jobs (the HTTP API's batch limit bounds request
bodies, not the library), all or nothing, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

import vesper
from vesper.domain.errors import InvalidRequest
from vesper.entrypoints.app import App

LIMIT = 1000  # Limits.max_batch's default


def test_a_batch_past_the_http_limit_is_stored_whole_and_in_order(queue_app: App) -> None:
    count = LIMIT * 2 + 1
    jobs = queue_app.enqueue_many(
        [vesper.JobRequest(type="bulk", payload={"n": n}) for n in range(count)]
    )
    assert [job.payload["n"] for job in jobs] == list(range(count))
    assert [job.seq for job in jobs] == sorted(job.seq for job in jobs)
    assert queue_app.container.get_stats()().total == count


def test_a_bad_job_anywhere_in_a_large_batch_stores_none(queue_app: App) -> None:
    requests = [vesper.JobRequest(type="bulk", payload={"n": n}) for n in range(LIMIT + 500)]
    requests[LIMIT + 100] = vesper.JobRequest(type="bulk", priority=99)
    with pytest.raises(InvalidRequest, match=rf"jobs\[{LIMIT + 100}\]\.priority"):
        queue_app.enqueue_many(requests)
    assert queue_app.container.get_stats()().total == 0
