"""A worker's finished batch and its next claim: CompletingJobRepository.complete_and_claim
where the store declares it, and RecordAndClaim on every store, with it and without it.

complete_and_claim must do what complete() then claim() would: fencing, attempts counted
at claim and the result orders are theirs. A store without it (capabilities.
complete_and_claim False) passes too: RecordAndClaim composes the two calls.
"""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from typing import cast

import pytest

from vesper.application.execution import ClaimJobs, Outcome, RecordAndClaim, RecordOutcomes
from vesper.application.policies import Policies
from vesper.application.ports import CompletingJobRepository, JobRepository
from vesper.domain.job import JobRecord, LeaseRef
from vesper.domain.states import Status
from vesper.testing.fixtures import LEASE, T0, StoreFixtures, at, claim, ids, new_job, ref, submit
from vesper.testing.freedoms import FreeJobs


class CompleteAndClaimContract(StoreFixtures):
    @pytest.fixture
    def completing(self, jobs: JobRepository) -> CompletingJobRepository:
        """The store's jobs, when it offers complete_and_claim (else the test is skipped)."""
        if not jobs.capabilities.complete_and_claim:
            pytest.skip("the store offers no complete_and_claim (capabilities)")
        return cast(CompletingJobRepository, jobs)

    def test_completes_the_batch_and_claims_the_next_in_claim_order(
        self, completing: CompletingJobRepository
    ) -> None:
        jobs = completing
        first = submit(jobs, *(new_job(priority=5) for _ in range(3)), now=T0)
        rest = submit(jobs, new_job(priority=1), new_job(priority=9), new_job(priority=1), now=T0)
        batch = claim(jobs, now=at(1), limit=3)
        assert {j.id for j in batch} == {rest[1].id, first[0].id, first[1].id}
        done, claimed = jobs.complete_and_claim(
            [ref(j) for j in batch], worker_id="w2", limit=3, lease=LEASE, now=at(2)
        )
        assert sorted(ids(done)) == sorted(ids(batch))  # in no particular order
        assert all(j.status is Status.DONE and j.lease is None for j in done)
        assert ids(claimed) == [first[2].id, rest[0].id, rest[2].id]  # in claim order
        for job in claimed:
            assert job.status is Status.PROCESSING
            assert job.attempts == 1
            assert job.worker_id == "w2"
            assert job.lease_expires_at == at(2) + LEASE
        for job in done:
            assert jobs.get(job.id) == job
        for job in claimed:
            assert jobs.get(job.id) == job

    def test_stale_leases_change_nothing_and_the_claim_still_happens(
        self, completing: CompletingJobRepository
    ) -> None:
        jobs = completing
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
            [ref(mine)], worker_id="w1", limit=5, lease=LEASE, now=later
        )
        assert done == []
        assert claimed == []

    def test_a_completed_job_is_never_claimed_again(
        self, completing: CompletingJobRepository
    ) -> None:
        jobs = completing
        [job] = submit(jobs, new_job(), now=T0)
        [claimed_once] = claim(jobs, now=at(1))
        done, claimed = jobs.complete_and_claim(
            [ref(claimed_once)], worker_id="w1", limit=10, lease=LEASE, now=at(2)
        )
        assert ids(done) == [job.id]
        assert claimed == []
        assert jobs.get(job.id).status is Status.DONE

    def test_no_leases_or_no_limit_is_one_of_the_two_calls(
        self, completing: CompletingJobRepository
    ) -> None:
        jobs = completing
        submit(jobs, new_job("a"), new_job("b"), now=T0)
        done, claimed = jobs.complete_and_claim(
            [], worker_id="w1", limit=1, lease=LEASE, types=["b"], now=at(1)
        )
        assert done == []
        assert [j.type for j in claimed] == ["b"]
        done, claimed = jobs.complete_and_claim(
            [ref(claimed[0])], worker_id="w1", limit=0, lease=LEASE, now=at(2)
        )
        assert [j.type for j in done] == ["b"]
        assert claimed == []
        assert jobs.stats(now=at(2)).by_status[Status.PENDING] == 1

    def test_types_filter_the_claim(self, completing: CompletingJobRepository) -> None:
        jobs = completing
        submit(jobs, new_job("a"), new_job("b"), new_job("a"), now=T0)
        [first] = claim(jobs, now=at(1), limit=1, types=["a"])
        done, claimed = jobs.complete_and_claim(
            [ref(first)], worker_id="w1", limit=5, lease=LEASE, types=["a"], now=at(2)
        )
        assert ids(done) == [first.id]
        assert [j.type for j in claimed] == ["a"]

    def test_types_are_taken_in_claim_order(self, completing: CompletingJobRepository) -> None:
        jobs = completing
        submit(
            jobs,
            new_job("a", priority=1),
            new_job("b", priority=9),
            new_job("c", priority=5),
            new_job("a"),
            now=T0,
        )
        [first] = claim(jobs, now=at(1), limit=1, types=["a"])
        done, claimed = jobs.complete_and_claim(
            [ref(first)], worker_id="w1", limit=5, lease=LEASE, types=["a", "c"], now=at(2)
        )
        assert ids(done) == [first.id]
        assert [j.type for j in claimed] == ["c", "a"]
        assert [j.type for j in claim(jobs, now=at(3))] == ["b"]

    def test_empty_types_claim_nothing(self, completing: CompletingJobRepository) -> None:
        jobs = completing
        submit(jobs, new_job("a"), new_job("a"), now=T0)
        [first] = claim(jobs, now=at(1), limit=1)
        done, claimed = jobs.complete_and_claim(
            [ref(first)], worker_id="w1", limit=5, lease=LEASE, types=[], now=at(2)
        )
        assert ids(done) == [first.id]
        assert claimed == []
        assert jobs.stats(now=at(2)).by_status[Status.PENDING] == 1


class RecordAndClaimContract(StoreFixtures):
    """RecordAndClaim (on the store's own clock) with the store as it is, and with the
    store hiding complete_and_claim: the same outcomes either way."""

    @pytest.fixture(params=["as_it_is", "without_complete_and_claim"])
    def recording(self, request: pytest.FixtureRequest, jobs: JobRepository) -> JobRepository:
        return jobs if request.param == "as_it_is" else FreeJobs(jobs)

    def use_case(self, jobs: JobRepository) -> RecordAndClaim:
        policies = Policies()
        return RecordAndClaim(
            RecordOutcomes(jobs, policies, random.Random(0)), ClaimJobs(jobs, policies)
        )

    def due(self, jobs: JobRepository, *types: str) -> list[JobRecord]:
        """Jobs of `types` (priority falling), due now by the store's clock."""
        batch = [new_job(t, priority=len(types) - i) for i, t in enumerate(types)]
        return [s.job for s in jobs.submit(batch)]

    def test_records_the_successes_and_claims_the_free_slots_in_claim_order(
        self, recording: JobRepository
    ) -> None:
        jobs = recording
        created = self.due(jobs, *"abcde")
        first, lost = ClaimJobs(jobs)("w1", 2)
        jobs.release([ref(lost)])
        recorded, claimed = self.use_case(jobs)([Outcome(job=first), Outcome(job=lost)], "w1", 3)
        assert {j.id for j in recorded} == {first.id}
        assert jobs.get(first.id).status is Status.DONE
        assert ids(claimed) == [lost.id, created[2].id, created[3].id]
        assert all(j.status is Status.PROCESSING and j.worker_id == "w1" for j in claimed)
        assert [jobs.get(j.id) for j in claimed] == claimed

    def test_claims_only_the_given_types(self, recording: JobRepository) -> None:
        jobs = recording
        created = self.due(jobs, "a", "b", "a", "b", "a")
        [first] = ClaimJobs(jobs)("w1", 1, ["a"])
        recorded, claimed = self.use_case(jobs)([Outcome(job=first)], "w1", 5, ["a"])
        assert {j.id for j in recorded} == {first.id}
        assert ids(claimed) == [created[2].id, created[4].id]
        assert {jobs.get(j.id).status for j in created if j.type == "b"} == {Status.PENDING}

    def test_a_failure_is_recorded_and_nothing_claimed(self, recording: JobRepository) -> None:
        jobs = recording
        self.due(jobs, "a", "a", "a")
        ok, bad = ClaimJobs(jobs)("w1", 2)
        outcomes = [Outcome(job=ok), Outcome(job=bad, error="boom")]
        recorded, claimed = self.use_case(jobs)(outcomes, "w1", 2)
        assert {j.id: j.status for j in recorded} == {ok.id: Status.DONE, bad.id: Status.FAILED}
        assert claimed == []
        assert jobs.get(bad.id).status is Status.FAILED
        assert self.use_case(jobs)([], "w1", 0) == ([], [])
