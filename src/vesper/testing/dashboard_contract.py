"""What the dashboard asks of a store: find by search text, and finished work by minute
(`capabilities.activity`; skipped without it)."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

import pytest

from vesper.application.ports import ActivityJobRepository, JobRepository
from vesper.domain.activity import minute_of
from vesper.domain.errors import InvalidRequest
from vesper.domain.query import JobQuery
from vesper.testing.fixtures import (
    T0,
    StoreFixtures,
    at,
    claim,
    failure,
    ids,
    new_job,
    ref,
    submit,
)


class SearchContract(StoreFixtures):
    def test_search_matches_part_of_a_key_exactly(self, jobs: JobRepository) -> None:
        a, b, _ = submit(jobs, new_job(key="order-17"), new_job(key="ORDER-18"), new_job(), now=T0)
        assert ids(jobs.find(JobQuery(search="order-1")).jobs) == [a.id]
        assert ids(jobs.find(JobQuery(search="R-1")).jobs) == [b.id]
        assert ids(jobs.find(JobQuery(search="%")).jobs) == []  # no LIKE wildcard
        assert ids(jobs.find(JobQuery(search="_")).jobs) == []

    def test_search_matches_a_whole_id(self, jobs: JobRepository) -> None:
        a, _ = submit(jobs, new_job(), new_job(key="k"), now=T0)
        assert ids(jobs.find(JobQuery(search=str(a.id))).jobs) == [a.id]
        assert ids(jobs.find(JobQuery(search=a.id.hex.upper())).jobs) == [a.id]

    def test_search_combines_with_filters_and_pages(self, jobs: JobRepository) -> None:
        created = submit(jobs, *(new_job(key=f"batch-{i}", priority=i % 2) for i in range(5)))
        page = jobs.find(JobQuery(search="batch", priority=1, limit=1))
        assert ids(page.jobs) == [created[3].id]
        rest = jobs.find(JobQuery(search="batch", priority=1, cursor=page.next_cursor))
        assert ids(rest.jobs) == [created[1].id]

    def test_empty_search_is_refused(self) -> None:
        with pytest.raises(InvalidRequest):
            JobQuery(search="")


class ActivityContract(StoreFixtures):
    def test_activity_counts_done_and_failures_by_minute(self, jobs: JobRepository) -> None:
        if not jobs.capabilities.activity:
            pytest.skip("the store does not count activity")
        done, retried, dead, _pending = submit(
            jobs, new_job(), new_job(), new_job(max_retries=0), new_job(), now=T0
        )
        claim(jobs, now=at(1), limit=3, lease=timedelta(minutes=5))
        jobs.complete([ref(jobs.get(done.id))], now=at(2))
        jobs.fail([failure(jobs.get(retried.id), timedelta(hours=1))], now=at(2))
        jobs.fail([failure(jobs.get(dead.id), None)], now=at(65))
        activity = cast(ActivityJobRepository, jobs).activity(
            window=timedelta(minutes=10), now=at(70)
        )
        assert len(activity.minutes) == 10
        assert activity.minutes[-1].minute == minute_of(at(70))
        by_minute = {m.minute: (m.done, m.failed) for m in activity.minutes if m.done or m.failed}
        assert by_minute == {minute_of(at(2)): (1, 1), minute_of(at(65)): (0, 1)}
        assert (activity.done, activity.failed) == (1, 2)  # the pending job is not there

    def test_activity_leaves_out_what_ended_before_the_window(self, jobs: JobRepository) -> None:
        if not jobs.capabilities.activity:
            pytest.skip("the store does not count activity")
        [job] = submit(jobs, new_job(), now=T0)
        claim(jobs, now=at(1))
        jobs.complete([ref(jobs.get(job.id))], now=at(2))
        late = cast(ActivityJobRepository, jobs).activity(
            window=timedelta(minutes=5), now=at(2) + timedelta(minutes=30)
        )
        assert (late.done, late.failed) == (0, 0)
        assert len(late.minutes) == 5
