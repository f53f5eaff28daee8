"""Operators and producers on known jobs: get, list, cancel, retry, stats."""

from __future__ import annotations

import uuid

import pytest

from vesper.adapters.clock import FixedClock
from vesper.adapters.memory import InMemoryJobRepository
from vesper.application.execution import ClaimJobs, Outcome, RecordOutcomes, lease_of
from vesper.application.management import (
    BulkJobs,
    CancelJob,
    GetJob,
    GetStats,
    ListJobs,
    RetryJob,
)
from vesper.application.policies import Policies
from vesper.application.submit import SubmitJob
from vesper.domain.backoff import Backoff
from vesper.domain.bulk import BulkAction, BulkFilter
from vesper.domain.errors import IllegalTransition, InvalidRequest, JobNotFound
from vesper.domain.job import JobId, JobRecord
from vesper.domain.query import JobQuery
from vesper.domain.states import Status
from vesper.domain.submission import JobRequest
from vesper.testing.freedoms import FreeJobs

from .builders import T0, seconds


def submit(repo: InMemoryJobRepository, **fields: object) -> JobRecord:
    return SubmitJob(repo)(JobRequest(**{"type": "t", **fields})).job  # type: ignore[arg-type]


def test_get_job_unknown_raises_job_not_found(repo: InMemoryJobRepository) -> None:
    missing = JobId(uuid.uuid4())
    with pytest.raises(JobNotFound) as raised:
        GetJob(repo)(missing)
    assert raised.value.job_id == missing


def test_get_job_returns_the_stored_job(repo: InMemoryJobRepository) -> None:
    job = submit(repo)
    assert GetJob(repo)(job.id) == job


def test_cancel_pending_and_failed_jobs(repo: InMemoryJobRepository, clock: FixedClock) -> None:
    failed = submit(repo, priority=5)  # claimed first, then failed
    pending = submit(repo)
    [claimed] = ClaimJobs(repo)("w1", 1)
    [failed_now] = RecordOutcomes(repo)([Outcome(job=claimed, error="boom")])
    assert failed_now.status is Status.FAILED
    clock.advance(seconds(1))
    for job_id in (failed.id, pending.id):
        cancelled = CancelJob(repo)(job_id)
        assert cancelled.status is Status.CANCELLED
        assert cancelled.finished_at == T0 + seconds(1)
    assert ClaimJobs(repo)("w1", 5) == []


# a processing job gets a cancel request instead (the contract's CancelRequestContract)
@pytest.mark.parametrize("make", ["done", "cancelled"])
def test_cancel_in_other_states_raises_illegal_transition(
    repo: InMemoryJobRepository, make: str
) -> None:
    job = submit(repo)
    [claimed] = ClaimJobs(repo)("w1", 1)
    if make == "done":
        RecordOutcomes(repo)([Outcome(job=claimed)])
    elif make == "cancelled":
        repo.release([lease_of(claimed)])
        CancelJob(repo)(job.id)
    before = repo.get(job.id)
    with pytest.raises(IllegalTransition) as raised:
        CancelJob(repo)(job.id)
    assert raised.value.action == "cancel"
    assert repo.get(job.id) == before


def test_cancel_unknown_raises_job_not_found(repo: InMemoryJobRepository) -> None:
    with pytest.raises(JobNotFound):
        CancelJob(repo)(JobId(uuid.uuid4()))


def test_retry_brings_a_dlq_job_back_due_now_with_fresh_retries(
    repo: InMemoryJobRepository, clock: FixedClock
) -> None:
    settings = Policies(backoff=Backoff(base=seconds(1), jitter=False))
    job = submit(repo, max_retries=1)
    for _ in range(2):
        [claimed] = ClaimJobs(repo)("w1", 1)
        RecordOutcomes(repo, settings)([Outcome(job=claimed, error="boom")])
        clock.advance(seconds(5))
    dead = repo.get(job.id)
    assert (dead.status, dead.retries, dead.attempts) == (Status.DLQ, 1, 2)
    clock.advance(seconds(100))
    retried = RetryJob(repo)(job.id)
    assert (retried.status, retried.retries) == (Status.PENDING, 0)
    assert retried.run_at == clock.now()
    assert retried.finished_at is None
    [again] = ClaimJobs(repo)("w2", 1)
    assert (again.id, again.attempts) == (job.id, 3)


@pytest.mark.parametrize("make", ["pending", "processing", "done"])
def test_retry_in_other_states_raises_illegal_transition(
    repo: InMemoryJobRepository, make: str
) -> None:
    job = submit(repo)
    if make != "pending":
        [claimed] = ClaimJobs(repo)("w1", 1)
        if make == "done":
            RecordOutcomes(repo)([Outcome(job=claimed)])
    before = repo.get(job.id)
    with pytest.raises(IllegalTransition) as raised:
        RetryJob(repo)(job.id)
    assert raised.value.status is before.status
    assert repo.get(job.id) == before


def test_list_jobs_pages_newest_first_with_filters(repo: InMemoryJobRepository) -> None:
    jobs = [submit(repo, type="a" if i % 2 else "b", priority=i % 3) for i in range(7)]
    list_jobs = ListJobs(repo)
    first = list_jobs(JobQuery(limit=3))
    assert [j.id for j in first.jobs] == [j.id for j in reversed(jobs)][:3]
    assert first.next_cursor is not None
    second = list_jobs(JobQuery(limit=3, cursor=first.next_cursor))
    third = list_jobs(JobQuery(limit=3, cursor=second.next_cursor))
    assert [j.id for j in (*first.jobs, *second.jobs, *third.jobs)] == [
        j.id for j in reversed(jobs)
    ]
    assert third.next_cursor is None
    only_a = list_jobs(JobQuery(type="a"))
    assert [j.id for j in only_a.jobs] == [j.id for j in reversed(jobs) if j.type == "a"]
    by_priority = list_jobs(JobQuery(priority=2, status=Status.PENDING))
    assert [j.id for j in by_priority.jobs] == [j.id for j in reversed(jobs) if j.priority == 2]
    assert list_jobs(JobQuery(status=Status.DONE)).jobs == ()


def test_get_stats_counts_and_oldest_due_age(
    repo: InMemoryJobRepository, clock: FixedClock
) -> None:
    submit(repo, priority=1)
    submit(repo, priority=1, delay=seconds(3600))  # not due: not counted in the age
    submit(repo, priority=4)
    [claimed] = ClaimJobs(repo)("w1", 1)
    RecordOutcomes(repo)([Outcome(job=claimed)])
    clock.advance(seconds(90))
    stats = GetStats(repo)()
    assert stats.total == 3
    assert stats.by_status[Status.PENDING] == 2
    assert stats.by_status[Status.DONE] == 1
    assert stats.by_priority == {1: 2, 4: 1}
    assert stats.oldest_due_age == seconds(90)


def test_bulk_by_queue_on_a_store_without_queues(
    repo: InMemoryJobRepository, clock: FixedClock
) -> None:
    # every job of a store without named queues is in "default"
    plain = FreeJobs(repo)
    for _ in range(2):
        submit(repo, queue="q1")
    clock.advance(seconds(1))  # a bulk action takes jobs last changed before it began
    bulk = BulkJobs(plain)
    assert bulk(BulkAction.CANCEL, BulkFilter(queue="q1")).changed == 0
    assert bulk(BulkAction.CANCEL, BulkFilter(queue="default")).changed == 2
    with pytest.raises(InvalidRequest, match="queue"):
        bulk(BulkAction.CANCEL, BulkFilter(queue="no spaces"))
