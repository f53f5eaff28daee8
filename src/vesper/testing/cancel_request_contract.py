"""cancel on a processing job: a cancel request, acted on by renew (and by whatever
else ends the attempt first), and snooze: back to pending later, the attempt refunded."""

from __future__ import annotations

from datetime import timedelta

from vesper.application.ports import JobRepository
from vesper.domain.job import Snoozed
from vesper.domain.states import Status
from vesper.testing.fixtures import (
    LEASE,
    StoreFixtures,
    at,
    claim_one,
    failure,
    new_job,
    ref,
    submit,
)
from vesper.testing.leases_contract import claimed_job


class CancelRequestContract(StoreFixtures):
    def test_cancel_of_a_processing_job_records_a_request(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        requested = jobs.cancel(job.id, now=at(5))
        assert requested == job.cancel(now=at(5))
        assert (requested.status, requested.cancel_requested_at) == (Status.PROCESSING, at(5))
        assert requested.lease == job.lease
        # a second request keeps the first one's time and changes nothing
        assert jobs.cancel(job.id, now=at(7)) == requested
        assert jobs.get(job.id) == requested

    def test_renew_ends_a_job_with_a_cancel_request_cancelled(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        jobs.cancel(job.id, now=at(5))
        [cancelled] = jobs.renew([ref(job)], lease=LEASE, now=at(6))
        assert (cancelled.status, cancelled.lease, cancelled.finished_at) == (
            Status.CANCELLED,
            None,
            at(6),
        )
        assert cancelled.cancel_requested_at == at(5)
        assert jobs.get(job.id) == cancelled
        # the lease is gone: the consumer's late outcome records nothing
        assert jobs.complete([ref(job)], now=at(7)) == []

    def test_renew_of_other_jobs_is_unchanged_by_a_request(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), new_job(), now=at(0))
        first = claim_one(jobs, now=at(1))
        second = claim_one(jobs, now=at(1))
        jobs.cancel(first.id, now=at(2))
        renewed = {j.id: j for j in jobs.renew([ref(first), ref(second)], lease=LEASE, now=at(3))}
        assert renewed[first.id].status is Status.CANCELLED
        assert renewed[second.id].status is Status.PROCESSING
        assert renewed[second.id].lease_expires_at == at(3) + LEASE

    def test_a_success_before_the_renewal_ends_done(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        jobs.cancel(job.id, now=at(5))
        [done] = jobs.complete([ref(job)], now=at(6))
        assert (done.status, done.cancel_requested_at) == (Status.DONE, at(5))

    def test_a_failure_with_a_request_ends_cancelled(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        requested = jobs.cancel(job.id, now=at(5))
        [ended] = jobs.fail([failure(job, timedelta(seconds=10))], now=at(6))
        assert ended == requested.fail(failure(job, timedelta(seconds=10)), now=at(6))
        assert (ended.status, ended.error, ended.finished_at) == (Status.CANCELLED, "boom", at(6))

    def test_expiry_and_release_with_a_request_end_cancelled(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), new_job(), now=at(0))
        first = claim_one(jobs, now=at(1), worker_id="w1")
        second = claim_one(jobs, now=at(1), worker_id="w2")
        jobs.cancel(first.id, now=at(2))
        jobs.cancel(second.id, now=at(2))
        [released] = jobs.release([ref(first)], now=at(3))
        assert (released.status, released.finished_at) == (Status.CANCELLED, at(3))
        [expired] = jobs.expire(worker_ids=["w2"], now=at(4))
        assert (expired.status, expired.finished_at) == (Status.CANCELLED, at(4))
        assert expired == jobs.get(second.id)

    def test_retry_clears_the_cancel_request(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        jobs.cancel(job.id, now=at(5))
        jobs.renew([ref(job)], lease=LEASE, now=at(6))
        retried = jobs.retry(job.id, now=at(7))
        assert (retried.status, retried.cancel_requested_at) == (Status.PENDING, None)
        again = claim_one(jobs, now=at(8))
        [renewed] = jobs.renew([ref(again)], lease=LEASE, now=at(9))
        assert renewed.status is Status.PROCESSING


class SnoozeContract(StoreFixtures):
    def test_snooze_puts_the_job_back_later_refunding_the_attempt(
        self, jobs: JobRepository
    ) -> None:
        job = claimed_job(jobs)
        snoozed = Snoozed(lease=ref(job), delay=timedelta(seconds=60))
        [later] = jobs.snooze([snoozed], now=at(5))
        assert later == job.snooze(snoozed, now=at(5))
        assert (later.status, later.run_at, later.attempts, later.retries, later.snoozes) == (
            Status.PENDING,
            at(65),
            0,
            0,
            1,
        )
        assert (later.lease, later.started_at) == (None, None)
        assert jobs.get(job.id) == later
        assert jobs.claim(worker_id="w1", limit=1, lease=LEASE, now=at(64)) == []
        [again] = jobs.claim(worker_id="w1", limit=1, lease=LEASE, now=at(65))
        assert (again.attempts, again.snoozes) == (1, 1)

    def test_snooze_is_fenced(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        jobs.release([ref(job)], now=at(2))
        stale = Snoozed(lease=ref(job), delay=timedelta(seconds=1))
        assert jobs.snooze([stale], now=at(3)) == []
        assert jobs.get(job.id).snoozes == 0

    def test_snooze_with_a_cancel_request_ends_cancelled(self, jobs: JobRepository) -> None:
        job = claimed_job(jobs)
        jobs.cancel(job.id, now=at(2))
        [ended] = jobs.snooze([Snoozed(lease=ref(job), delay=timedelta(seconds=9))], now=at(3))
        assert (ended.status, ended.finished_at, ended.snoozes) == (Status.CANCELLED, at(3), 1)

    def test_snooze_many_each_with_its_own_delay(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), new_job(), now=at(0))
        a = claim_one(jobs, now=at(1))
        b = claim_one(jobs, now=at(1))
        snoozes = [
            Snoozed(lease=ref(a), delay=timedelta(seconds=10)),
            Snoozed(lease=ref(b), delay=timedelta(seconds=20)),
        ]
        later = {j.id: j.run_at for j in jobs.snooze(snoozes, now=at(2))}
        assert later == {a.id: at(12), b.id: at(22)}
