"""bulk: retry or cancel the jobs matching a filter, a bounded batch per call."""

from __future__ import annotations

import pytest

from vesper.application.ports import JobRepository
from vesper.domain.bulk import BulkAction, BulkFilter
from vesper.domain.errors import InvalidRequest
from vesper.domain.states import Status
from vesper.testing.fixtures import T0, StoreFixtures, all_jobs, at, claim, failure, new_job, submit
from vesper.testing.management_contract import one_of_each_status


def dead_jobs(jobs: JobRepository, count: int, job_type: str = "email") -> list[str]:
    """`count` jobs of `job_type` in dlq (submitted at T0, failed at T0 + 2 s)."""
    created = submit(jobs, *(new_job(job_type, max_retries=0) for _ in range(count)), now=T0)
    claimed = claim(jobs, now=at(1), limit=count, types=[job_type])
    jobs.fail([failure(job, None) for job in claimed], now=at(2))
    return [str(job.id) for job in created]


class BulkContract(StoreFixtures):
    def test_bulk_retry_changes_at_most_limit_jobs_per_call(self, jobs: JobRepository) -> None:
        dead_jobs(jobs, 5)
        where = BulkFilter(status=Status.DLQ, touched_before=at(10))
        assert jobs.bulk(BulkAction.RETRY, where, limit=2, now=at(10)) == 2
        assert jobs.bulk(BulkAction.RETRY, where, limit=2, now=at(10)) == 2
        assert jobs.bulk(BulkAction.RETRY, where, limit=2, now=at(10)) == 1
        assert jobs.bulk(BulkAction.RETRY, where, limit=2, now=at(10)) == 0
        every = all_jobs(jobs)
        assert {j.status for j in every} == {Status.PENDING}
        assert all((j.run_at, j.retries, j.updated_at) == (at(10), 0, at(10)) for j in every)

    def test_bulk_retry_does_what_retry_does(self, jobs: JobRepository) -> None:
        [job_id] = dead_jobs(jobs, 1)
        [before] = all_jobs(jobs)
        assert jobs.bulk(BulkAction.RETRY, BulkFilter(), limit=10, now=at(9)) == 1
        assert jobs.get(before.id) == before.retry(now=at(9))
        assert str(before.id) == job_id

    def test_bulk_filters_by_type_priority_and_creation(self, jobs: JobRepository) -> None:
        dead_jobs(jobs, 2, "a")
        dead_jobs(jobs, 3, "b")
        assert jobs.bulk(BulkAction.RETRY, BulkFilter(type="a"), limit=10, now=at(5)) == 2
        assert {j.type for j in all_jobs(jobs) if j.status is Status.PENDING} == {"a"}
        assert jobs.bulk(BulkAction.RETRY, BulkFilter(priority=1), limit=10, now=at(5)) == 0
        # every job was created at T0: none before it
        assert jobs.bulk(BulkAction.RETRY, BulkFilter(created_before=T0), limit=10) == 0
        assert jobs.bulk(BulkAction.RETRY, BulkFilter(created_before=at(1)), limit=10) == 3

    def test_bulk_takes_only_jobs_touched_before_the_mark(self, jobs: JobRepository) -> None:
        dead_jobs(jobs, 3)  # last changed at T0 + 2 s
        early = BulkFilter(touched_before=at(2))
        assert jobs.bulk(BulkAction.RETRY, early, limit=10, now=at(5)) == 0
        late = BulkFilter(touched_before=at(3))
        assert jobs.bulk(BulkAction.RETRY, late, limit=10, now=at(5)) == 3

    def test_bulk_cancel_takes_pending_and_failed_only(self, jobs: JobRepository) -> None:
        before = one_of_each_status(jobs)
        assert jobs.bulk(BulkAction.CANCEL, BulkFilter(), limit=10, now=at(3)) == 2
        for status in (Status.PENDING, Status.FAILED):
            job = jobs.get(before[status].id)
            assert job == before[status].cancel(now=at(3))
        for status in (Status.PROCESSING, Status.DONE, Status.DLQ):
            assert jobs.get(before[status].id) == before[status]

    def test_bulk_retry_takes_dlq_failed_and_cancelled(self, jobs: JobRepository) -> None:
        before = one_of_each_status(jobs)
        assert jobs.bulk(BulkAction.RETRY, BulkFilter(), limit=10, now=at(3)) == 3
        for status in (Status.DLQ, Status.FAILED, Status.CANCELLED):
            assert jobs.get(before[status].id) == before[status].retry(now=at(3))
        for status in (Status.PENDING, Status.PROCESSING, Status.DONE):
            assert jobs.get(before[status].id) == before[status]

    def test_a_status_the_action_cannot_take_is_refused(self, jobs: JobRepository) -> None:
        with pytest.raises(InvalidRequest, match="status"):
            jobs.bulk(BulkAction.RETRY, BulkFilter(status=Status.DONE), limit=10)
