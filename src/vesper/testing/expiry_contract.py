"""JobRepository.expire: leases that ran out, and the leases of dead worker processes."""

from __future__ import annotations

from datetime import timedelta

from vesper.application.ports import JobRepository
from vesper.domain.states import Status
from vesper.testing.fixtures import (
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


class ExpireContract(StoreFixtures):
    def test_expire_returns_nothing_without_leases(self, jobs: JobRepository) -> None:
        assert jobs.expire(now=at(1000)) == []
        submit(jobs, new_job(), now=T0)
        assert jobs.expire(worker_ids=["w1"], now=at(1000)) == []

    def test_expire_ends_expired_lease_and_counts_a_retry(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), now=T0)
        job = claim_one(jobs, now=at(1))  # the lease runs until T0 + 31 s
        assert jobs.expire(now=at(30.999999)) == []
        [expired] = jobs.expire(now=at(31))
        assert expired == job.expire(now=at(31))
        assert (expired.status, expired.retries, expired.attempts) == (Status.FAILED, 1, 1)
        # it keeps its run_at, and so its place ahead of jobs submitted after it
        assert (expired.lease, expired.worker_id, expired.run_at) == (None, None, T0)
        assert expired.error != ""
        assert jobs.get(job.id) == expired

    def test_expire_then_claim_reclaims_job(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), now=T0)
        first = claim_one(jobs, now=at(1))
        assert claim(jobs, now=at(40)) == []  # expired but not yet expire()d: still leased
        jobs.expire(now=at(40))
        again = claim_one(jobs, now=at(40), worker_id="w2")
        assert (again.id, again.attempts, again.retries, again.worker_id) == (
            first.id,
            2,
            1,
            "w2",
        )
        assert jobs.complete([ref(first)], now=at(41)) == []
        assert ids(jobs.complete([ref(again)], now=at(41))) == [first.id]

    def test_expire_leaves_unexpired_leases(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), now=T0)
        short = claim_one(jobs, now=at(1))
        submit(jobs, new_job(), now=at(1))
        long = claim(jobs, now=at(1), lease=timedelta(minutes=10))[0]
        assert ids(jobs.expire(now=at(60))) == [short.id]
        assert jobs.get(long.id) == long

    def test_expire_returns_each_job_once(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), now=T0)
        claim_one(jobs, now=at(1))
        assert len(jobs.expire(now=at(60))) == 1
        assert jobs.expire(now=at(61)) == []

    def test_expire_with_worker_ids_ends_their_leases_before_expiry(
        self, jobs: JobRepository
    ) -> None:
        submit(jobs, *(new_job() for _ in range(4)), now=T0)
        dead = claim(jobs, now=at(1), worker_id="dead", limit=2)
        alive = claim(jobs, now=at(1), worker_id="alive", limit=2)
        ended = jobs.expire(worker_ids=["dead", "unknown"], now=at(2))
        assert sorted(ids(ended)) == sorted(ids(dead))
        assert all(j.status is Status.FAILED and j.retries == 1 for j in ended)
        assert [jobs.get(j.id) for j in alive] == alive
        assert sorted(ids(claim(jobs, now=at(2), worker_id="w3"))) == sorted(ids(dead))

    def test_expire_moves_job_with_exhausted_retries_to_dlq(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(max_retries=1), now=T0)
        claim_one(jobs, now=at(1))
        [failed] = jobs.expire(now=at(100))
        assert (failed.status, failed.retries) == (Status.FAILED, 1)
        claim_one(jobs, now=at(100))
        [dead] = jobs.expire(now=at(200))
        assert (dead.status, dead.retries, dead.attempts) == (Status.DLQ, 1, 2)
        assert dead.finished_at == at(200)
        assert claim(jobs, now=at(300)) == []

    def test_expire_ignores_jobs_not_processing(self, jobs: JobRepository) -> None:
        submit(jobs, *(new_job() for _ in range(3)), now=T0)
        a, b = claim(jobs, now=at(1), limit=2)
        jobs.complete([ref(a)], now=at(2))
        jobs.fail([failure(b, timedelta(seconds=1))], now=at(2))
        before = [jobs.get(j.id) for j in (a, b)]
        assert [j.status for j in before] == [Status.DONE, Status.FAILED]
        assert jobs.expire(worker_ids=["w1"], now=at(1000)) == []
        assert [jobs.get(j.id) for j in (a, b)] == before
