"""bulk: retry or cancel the jobs matching a filter, a bounded batch per call."""

from __future__ import annotations

from datetime import datetime

import attrs
import pytest

from vesper.application.ports import JobRepository, QueueingJobRepository
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


def changed(
    jobs: JobRepository,
    action: BulkAction,
    where: BulkFilter,
    *,
    limit: int = 10,
    now: datetime | None = None,
) -> int:
    """How many jobs one batch changed (checking it skipped none)."""
    batch = jobs.bulk(action, where, limit=limit, now=now)
    assert batch.skipped == 0
    assert (batch.last_seq is None) == (batch.changed == 0)
    return batch.changed


class BulkContract(StoreFixtures):
    def test_bulk_retry_changes_at_most_limit_jobs_per_call(self, jobs: JobRepository) -> None:
        dead_jobs(jobs, 5)
        seqs = sorted(j.seq for j in all_jobs(jobs))
        where = BulkFilter(status=Status.DLQ, touched_before=at(10))
        batches = []
        for _ in range(4):  # bounded: the fourth finds none
            batch = jobs.bulk(BulkAction.RETRY, where, limit=2, now=at(10))
            batches.append((batch.changed, batch.skipped, batch.last_seq))
            where = attrs.evolve(where, after_seq=batch.last_seq)
        # each batch takes the next jobs in insertion order and names the last it saw
        assert batches == [(2, 0, seqs[1]), (2, 0, seqs[3]), (1, 0, seqs[4]), (0, 0, None)]
        every = all_jobs(jobs)
        assert {j.status for j in every} == {Status.PENDING}
        assert all((j.run_at, j.retries, j.updated_at) == (at(10), 0, at(10)) for j in every)

    def test_a_batch_starts_after_after_seq(self, jobs: JobRepository) -> None:
        dead_jobs(jobs, 3)
        first, second, third = sorted(all_jobs(jobs), key=lambda j: j.seq)
        where = BulkFilter(after_seq=first.seq)
        batch = jobs.bulk(BulkAction.RETRY, where, limit=10, now=at(5))
        assert (batch.changed, batch.last_seq) == (2, third.seq)
        assert jobs.get(first.id).status is Status.DLQ
        assert {jobs.get(second.id).status, jobs.get(third.id).status} == {Status.PENDING}

    def test_a_batch_counts_the_changed_jobs_by_kind(self, jobs: JobRepository) -> None:
        dead_jobs(jobs, 2, "a")
        dead_jobs(jobs, 1, "b")
        batch = jobs.bulk(BulkAction.RETRY, BulkFilter(), limit=10, now=at(5))
        assert dict(batch.kinds) == {("a", 0): 2, ("b", 0): 1}

    def test_bulk_retry_does_what_retry_does(self, jobs: JobRepository) -> None:
        [job_id] = dead_jobs(jobs, 1)
        [before] = all_jobs(jobs)
        assert changed(jobs, BulkAction.RETRY, BulkFilter(), now=at(9)) == 1
        assert jobs.get(before.id) == before.retry(now=at(9))
        assert str(before.id) == job_id

    def test_bulk_filters_by_type_priority_and_creation(self, jobs: JobRepository) -> None:
        dead_jobs(jobs, 2, "a")
        dead_jobs(jobs, 3, "b")
        assert changed(jobs, BulkAction.RETRY, BulkFilter(type="a"), now=at(5)) == 2
        assert {j.type for j in all_jobs(jobs) if j.status is Status.PENDING} == {"a"}
        assert changed(jobs, BulkAction.RETRY, BulkFilter(priority=1), now=at(5)) == 0
        # every job was created at T0: none before it
        assert changed(jobs, BulkAction.RETRY, BulkFilter(created_before=T0)) == 0
        assert changed(jobs, BulkAction.RETRY, BulkFilter(created_before=at(1))) == 3

    def test_bulk_filters_by_queue(self, queueing: QueueingJobRepository) -> None:
        submit(queueing, new_job("a"), new_job("a", queue="q1"), new_job("b", queue="q1"), now=T0)
        cancel = BulkAction.CANCEL
        assert changed(queueing, cancel, BulkFilter(queue="q2"), now=at(1)) == 0
        assert changed(queueing, cancel, BulkFilter(queue="q1", type="a"), now=at(1)) == 1
        assert changed(queueing, cancel, BulkFilter(queue="q1"), now=at(1)) == 1
        left = [(j.queue, j.type) for j in all_jobs(queueing) if j.status is Status.PENDING]
        assert left == [("default", "a")]
        assert changed(queueing, cancel, BulkFilter(queue="default"), now=at(1)) == 1

    def test_bulk_takes_only_jobs_touched_before_the_mark(self, jobs: JobRepository) -> None:
        dead_jobs(jobs, 3)  # last changed at T0 + 2 s
        early = BulkFilter(touched_before=at(2))
        assert changed(jobs, BulkAction.RETRY, early, now=at(5)) == 0
        late = BulkFilter(touched_before=at(3))
        assert changed(jobs, BulkAction.RETRY, late, now=at(5)) == 3

    def test_bulk_cancel_takes_pending_and_failed_only(self, jobs: JobRepository) -> None:
        before = one_of_each_status(jobs)
        assert changed(jobs, BulkAction.CANCEL, BulkFilter(), now=at(3)) == 2
        for status in (Status.PENDING, Status.FAILED):
            job = jobs.get(before[status].id)
            assert job == before[status].cancel(now=at(3))
        for status in (Status.PROCESSING, Status.DONE, Status.DLQ):
            assert jobs.get(before[status].id) == before[status]

    def test_bulk_retry_takes_dlq_failed_and_cancelled(self, jobs: JobRepository) -> None:
        before = one_of_each_status(jobs)
        assert changed(jobs, BulkAction.RETRY, BulkFilter(), now=at(3)) == 3
        for status in (Status.DLQ, Status.FAILED, Status.CANCELLED):
            assert jobs.get(before[status].id) == before[status].retry(now=at(3))
        for status in (Status.PENDING, Status.PROCESSING, Status.DONE):
            assert jobs.get(before[status].id) == before[status]

    def test_a_status_the_action_cannot_take_is_refused(self, jobs: JobRepository) -> None:
        with pytest.raises(InvalidRequest, match="status"):
            jobs.bulk(BulkAction.RETRY, BulkFilter(status=Status.DONE), limit=10)

    def test_bulk_takes_only_the_given_ids(self, jobs: JobRepository) -> None:
        dead_jobs(jobs, 4)
        first, second, third, fourth = sorted(all_jobs(jobs), key=lambda j: j.seq)
        pending = submit(jobs, new_job(), now=at(3))[0]
        # a pending job is not retried even when named; the others named change
        where = BulkFilter(ids=frozenset({first.id, third.id, pending.id}))
        assert changed(jobs, BulkAction.RETRY, where, now=at(5)) == 2
        assert [jobs.get(j.id).status for j in (first, second, third, fourth)] == [
            Status.PENDING,
            Status.DLQ,
            Status.PENDING,
            Status.DLQ,
        ]
        assert jobs.get(pending.id) == pending
        # named jobs combine with the other fields, and none named takes none
        where = BulkFilter(ids=frozenset({second.id}), type="other")
        assert changed(jobs, BulkAction.RETRY, where, now=at(6)) == 0
        assert changed(jobs, BulkAction.RETRY, BulkFilter(ids=frozenset()), now=at(6)) == 0
        assert jobs.get(second.id).status is Status.DLQ
