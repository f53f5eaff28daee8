"""complete, fail, renew, release and expire: outcomes, retries, dlq, and fencing."""

from __future__ import annotations

import uuid
from datetime import timedelta

from vesper.application.ports import JobRepository
from vesper.domain.job import Failure, JobId, JobRecord, LeaseRef
from vesper.domain.states import Status
from vesper.testing.fixtures import (
    LEASE,
    T0,
    StoreFixtures,
    at,
    claim,
    claim_one,
    failure,
    ids,
    new_job,
    ref,
    submit,
)


def claimed_job(jobs: JobRepository, *, max_retries: int = 3, worker_id: str = "w1") -> JobRecord:
    """A job submitted at T0 and claimed at T0 + 1 s (lease until T0 + 31 s)."""
    submit(jobs, new_job(max_retries=max_retries), now=T0)
    return claim_one(jobs, now=at(1), worker_id=worker_id)


def superseded(jobs: JobRepository) -> tuple[JobRecord, JobRecord]:
    """(the first claim, the second): the first lease expired and another worker claimed."""
    first = claimed_job(jobs)
    jobs.expire(now=at(40))
    second = claim_one(jobs, now=at(41), worker_id="w2")
    return first, second


class CompleteContract(StoreFixtures):
    def test_complete_marks_job_done(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        [done] = jobs.complete([ref(job)], now=at(5))
        assert done == job.complete(ref(job), now=at(5))
        assert (done.status, done.lease, done.finished_at) == (Status.DONE, None, at(5))
        assert jobs.get(job.id) == done

    def test_complete_many_returns_only_those_with_current_leases(
        self, jobs: JobRepository
    ) -> None:
        submit(jobs, *(new_job() for _ in range(3)), now=T0)
        a, b, c = claim(jobs, now=at(1), limit=3)
        jobs.release([ref(b)], now=at(2))
        done = jobs.complete([ref(a), ref(b), ref(c)], now=at(3))
        assert sorted(ids(done)) == sorted([a.id, c.id])
        assert jobs.get(b.id).status is Status.PENDING

    def test_complete_with_expired_lease_returns_nothing(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)  # the lease ends at T0 + 31 s; nobody ran expire()
        assert jobs.complete([ref(job)], now=at(31.000001)) == []
        assert jobs.get(job.id) == job

    def test_complete_just_before_lease_expiry_succeeds(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        assert ids(jobs.complete([ref(job)], now=at(30.999999))) == [job.id]

    def test_complete_with_stale_lease_returns_nothing(self, jobs: JobRepository) -> None:
        first, second = superseded(jobs)
        assert jobs.complete([ref(first)], now=at(42)) == []
        assert jobs.get(first.id) == second

    def test_complete_with_released_lease_returns_nothing(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        [released] = jobs.release([ref(job)], now=at(2))
        assert jobs.complete([ref(job)], now=at(3)) == []
        assert jobs.get(job.id) == released

    def test_complete_twice_returns_nothing_the_second_time(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        [done] = jobs.complete([ref(job)], now=at(2))
        assert jobs.complete([ref(job)], now=at(3)) == []
        assert jobs.get(job.id) == done

    def test_complete_with_unknown_token_returns_nothing(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        forged = LeaseRef(job_id=job.id, token=uuid.uuid4())
        assert jobs.complete([forged], now=at(2)) == []
        assert jobs.get(job.id) == job

    def test_complete_changes_only_the_job_of_the_lease(self, jobs: JobRepository) -> None:
        # a store may give one token to a whole claim batch: the job id still decides
        submit(jobs, new_job(), new_job(), now=T0)
        a, b = claim(jobs, now=at(1), limit=2)
        assert ids(jobs.complete([ref(a)], now=at(2))) == [a.id]
        assert jobs.get(b.id) == b
        assert ids(jobs.fail([failure(b, None)], now=at(2))) == [b.id]
        assert jobs.get(a.id).status is Status.DONE

    def test_complete_unknown_job_returns_nothing(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        assert job.lease is not None
        ghost = LeaseRef(job_id=JobId(uuid.uuid4()), token=job.lease.token)
        assert jobs.complete([ghost], now=at(2)) == []
        assert jobs.get(job.id) == job


class FailContract(StoreFixtures):
    def test_fail_schedules_retry_at_now_plus_delay(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        delay = timedelta(seconds=10, microseconds=250)
        [failed] = jobs.fail([failure(job, delay, "it broke: ü")], now=at(5))
        assert failed == job.fail(failure(job, delay, "it broke: ü"), now=at(5))
        assert (failed.status, failed.retries, failed.error) == (Status.FAILED, 1, "it broke: ü")
        assert (failed.run_at, failed.lease, failed.attempts) == (at(5) + delay, None, 1)
        assert jobs.get(job.id) == failed
        assert claim(jobs, now=at(5) + delay - timedelta(microseconds=1)) == []
        assert ids(claim(jobs, now=at(5) + delay)) == [job.id]

    def test_fail_after_max_retries_moves_to_dlq(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs, max_retries=2)
        for attempt in range(1, 3):
            [failed] = jobs.fail([failure(job, timedelta(0), f"e{attempt}")], now=at(attempt * 10))
            assert (failed.status, failed.retries) == (Status.FAILED, attempt)
            job = claim_one(jobs, now=at(attempt * 10))
        [dead] = jobs.fail([failure(job, timedelta(0), "last")], now=at(30))
        assert (dead.status, dead.retries, dead.attempts) == (Status.DLQ, 2, 3)
        assert (dead.error, dead.finished_at, dead.lease) == ("last", at(30), None)
        assert jobs.get(job.id) == dead
        assert claim(jobs, now=at(500)) == []

    def test_fail_with_max_retries_zero_moves_to_dlq(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs, max_retries=0)
        [dead] = jobs.fail([failure(job, timedelta(seconds=1))], now=at(2))
        assert (dead.status, dead.retries) == (Status.DLQ, 0)

    def test_fail_non_retryable_moves_to_dlq_at_once(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs, max_retries=5)
        [dead] = jobs.fail([failure(job, None, "bad input")], now=at(2))
        assert dead == job.fail(failure(job, None, "bad input"), now=at(2))
        assert (dead.status, dead.retries, dead.error) == (Status.DLQ, 0, "bad input")
        assert jobs.get(job.id) == dead

    def test_fail_many_records_each_failure(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), new_job(), now=T0)
        a, b = claim(jobs, now=at(1), limit=2)
        failures = [failure(a, timedelta(seconds=3), "a"), failure(b, None, "b")]
        result = {j.id: j for j in jobs.fail(failures, now=at(2))}
        assert (result[a.id].status, result[a.id].error, result[a.id].run_at) == (
            Status.FAILED,
            "a",
            at(5),
        )
        assert (result[b.id].status, result[b.id].error) == (Status.DLQ, "b")

    def test_fail_with_expired_lease_returns_nothing(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        assert jobs.fail([failure(job, timedelta(0))], now=at(32)) == []
        assert jobs.get(job.id) == job

    def test_fail_with_stale_lease_returns_nothing(self, jobs: JobRepository) -> None:
        first, second = superseded(jobs)
        stale = Failure(lease=ref(first), error="late", retry_delay=timedelta(0))
        assert jobs.fail([stale], now=at(42)) == []
        assert jobs.get(first.id) == second


class RenewContract(StoreFixtures):
    def test_renew_extends_lease_to_now_plus_lease(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        [renewed] = jobs.renew([ref(job)], lease=timedelta(seconds=60), now=at(20))
        assert renewed == job.renew(ref(job), now=at(20), lease=timedelta(seconds=60))
        assert renewed.lease_expires_at == at(80)
        assert ref(renewed) == ref(job)  # the same token: the holder keeps its lease
        assert jobs.get(job.id) == renewed

    def test_renew_keeps_job_from_expiring(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        jobs.renew([ref(job)], lease=LEASE, now=at(30))
        assert jobs.expire(now=at(59.999999)) == []
        assert ids(jobs.complete([ref(job)], now=at(59.999999))) == [job.id]

    def test_renew_with_expired_lease_returns_nothing(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        assert jobs.renew([ref(job)], lease=LEASE, now=at(31.5)) == []
        assert jobs.get(job.id) == job

    def test_renew_with_stale_lease_returns_nothing(self, jobs: JobRepository) -> None:
        first, second = superseded(jobs)
        assert jobs.renew([ref(first)], lease=LEASE, now=at(42)) == []
        assert jobs.get(first.id) == second


class ReleaseContract(StoreFixtures):
    def test_release_returns_job_to_pending_and_refunds_attempt(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        [released] = jobs.release([ref(job)], now=at(4))
        assert released == job.release(ref(job), now=at(4))
        assert (released.status, released.attempts, released.retries) == (Status.PENDING, 0, 0)
        assert (released.lease, released.worker_id, released.started_at) == (None, None, None)
        assert jobs.get(job.id) == released

    def test_release_makes_job_claimable_at_once(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        jobs.release([ref(job)], now=at(4))
        again = claim_one(jobs, now=at(4), worker_id="w2")
        assert (again.id, again.attempts, again.worker_id) == (job.id, 1, "w2")

    def test_release_with_expired_lease_returns_nothing(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        assert jobs.release([ref(job)], now=at(31)) == []
        assert jobs.get(job.id) == job

    def test_release_with_stale_lease_returns_nothing(self, jobs: JobRepository) -> None:
        first, second = superseded(jobs)
        assert jobs.release([ref(first)], now=at(42)) == []
        assert jobs.get(first.id) == second

    def test_lease_actions_with_no_leases_return_nothing(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        assert jobs.complete([], now=at(2)) == []
        assert jobs.fail([], now=at(2)) == []
        assert jobs.renew([], lease=LEASE, now=at(2)) == []
        assert jobs.release([], now=at(2)) == []
        assert jobs.get(job.id) == job
