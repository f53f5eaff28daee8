"""JobRepository.complete_and_claim: what complete() then claim() would do, in one call.

The worker records a finished batch and takes the next one with it; fencing, attempts
counted at claim and claim order must be exactly those of the two calls.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from vesper.application.execution import lease_of
from vesper.application.ports import JobRepository
from vesper.domain.job import LeaseRef
from vesper.domain.states import Status
from vesper.testing.fixtures import LEASE, T0, StoreFixtures, at, claim, new_job, submit


class CompleteAndClaimContract(StoreFixtures):
    def test_completes_the_batch_and_claims_the_next_in_claim_order(
        self, jobs: JobRepository
    ) -> None:
        first = submit(jobs, *(new_job(priority=5) for _ in range(3)), now=T0)
        rest = submit(jobs, new_job(priority=1), new_job(priority=9), new_job(priority=1), now=T0)
        batch = claim(jobs, now=at(1), limit=3)
        assert {j.id for j in batch} == {rest[1].id, first[0].id, first[1].id}
        done, claimed = jobs.complete_and_claim(
            [lease_of(j) for j in batch], worker_id="w2", limit=3, lease=LEASE, now=at(2)
        )
        assert [j.id for j in done] == [j.id for j in batch]  # the caller's order
        assert all(j.status is Status.DONE and j.lease is None for j in done)
        assert [j.id for j in claimed] == [first[2].id, rest[0].id, rest[2].id]
        for job in claimed:
            assert job.status is Status.PROCESSING
            assert job.attempts == 1
            assert job.worker_id == "w2"
            assert job.lease_expires_at == at(2) + LEASE
        assert len({j.lease.token for j in claimed if j.lease}) == 1
        for job in done:
            assert jobs.get(job.id) == job
        for job in claimed:
            assert jobs.get(job.id) == job

    def test_stale_leases_change_nothing_and_the_claim_still_happens(
        self, jobs: JobRepository
    ) -> None:
        submit(jobs, new_job(), new_job(), now=T0)
        [mine] = claim(jobs, now=at(1), limit=1)
        stale = LeaseRef(job_id=mine.id, token=uuid.uuid4())
        done, claimed = jobs.complete_and_claim(
            [stale], worker_id="w1", limit=5, lease=LEASE, now=at(2)
        )
        assert done == []
        assert len(claimed) == 1
        assert claimed[0].id != mine.id
        assert jobs.get(mine.id) == mine  # still processing under its own lease
        # an expired lease is stale too
        later = at(1) + LEASE + timedelta(seconds=1)
        done, claimed = jobs.complete_and_claim(
            [lease_of(mine)], worker_id="w1", limit=5, lease=LEASE, now=later
        )
        assert done == []
        assert claimed == []

    def test_a_completed_job_is_never_claimed_again(self, jobs: JobRepository) -> None:
        [job] = submit(jobs, new_job(), now=T0)
        [claimed_once] = claim(jobs, now=at(1))
        done, claimed = jobs.complete_and_claim(
            [lease_of(claimed_once)], worker_id="w1", limit=10, lease=LEASE, now=at(2)
        )
        assert [j.id for j in done] == [job.id]
        assert claimed == []
        assert jobs.get(job.id).status is Status.DONE

    def test_no_leases_or_no_limit_is_one_of_the_two_calls(self, jobs: JobRepository) -> None:
        submit(jobs, new_job("a"), new_job("b"), now=T0)
        done, claimed = jobs.complete_and_claim(
            [], worker_id="w1", limit=1, lease=LEASE, types=["b"], now=at(1)
        )
        assert done == []
        assert [j.type for j in claimed] == ["b"]
        done, claimed = jobs.complete_and_claim(
            [lease_of(claimed[0])], worker_id="w1", limit=0, lease=LEASE, now=at(2)
        )
        assert [j.type for j in done] == ["b"]
        assert claimed == []
        assert jobs.stats(now=at(2)).by_status[Status.PENDING] == 1

    def test_types_filter_the_claim(self, jobs: JobRepository) -> None:
        submit(jobs, new_job("a"), new_job("b"), new_job("a"), now=T0)
        [first] = claim(jobs, now=at(1), limit=1, types=["a"])
        done, claimed = jobs.complete_and_claim(
            [lease_of(first)], worker_id="w1", limit=5, lease=LEASE, types=["a"], now=at(2)
        )
        assert [j.id for j in done] == [first.id]
        assert [j.type for j in claimed] == ["a"]
