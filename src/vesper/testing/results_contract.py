"""Results: complete (and complete_and_claim) store each job's JSON result with it; and
get_many, the one read that waiters share."""

from __future__ import annotations

import json
import uuid
from typing import Any, cast

import pytest

from vesper.application.ports import CompletingJobRepository, JobRepository
from vesper.domain.job import JobId
from vesper.domain.states import Status
from vesper.testing.fixtures import LEASE, T0, StoreFixtures, at, claim, ids, new_job, ref, submit

# values whose JSON a store must keep as sent: nesting, unicode, NUL in a string, big
# integers, floats, and the JSON values that are not objects
RESULTS: list[Any] = [
    {"n": 1},
    {"nested": {"list": [1, 2.5, None, True, "ü ✓"], "empty": {}}},
    "a string with \u0000 inside",
    [1, "two", {"three": 3}],
    12345678901234567890,
    -0.5,
    False,
]


def _text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class ResultsContract(StoreFixtures):
    def test_complete_stores_each_jobs_result(self, jobs: JobRepository) -> None:
        submit(jobs, *(new_job() for _ in range(len(RESULTS) + 1)), now=T0)
        claimed = claim(jobs, now=at(1))
        *with_result, without = claimed
        results = {j.id: _text(v) for j, v in zip(with_result, RESULTS, strict=True)}
        done = jobs.complete([ref(j) for j in claimed], now=at(2), results=results)
        assert sorted(ids(done)) == sorted(ids(claimed))
        expected = {j.id: v for j, v in zip(with_result, RESULTS, strict=True)}
        expected[without.id] = None
        assert {j.id: j.result for j in done} == expected
        assert {j.id: jobs.get(j.id).result for j in claimed} == expected

    def test_a_stale_lease_stores_no_result(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), now=T0)
        [job] = claim(jobs, now=at(1))
        jobs.expire(now=at(1) + LEASE)
        assert jobs.complete([ref(job)], now=at(40), results={job.id: '{"late":1}'}) == []
        assert jobs.get(job.id).result is None

    def test_a_job_has_no_result_until_completed_with_one(self, jobs: JobRepository) -> None:
        [job] = submit(jobs, new_job(), now=T0)
        assert job.result is None
        [claimed] = claim(jobs, now=at(1))
        [done] = jobs.complete([ref(claimed)], now=at(2))
        assert done.result is None
        assert jobs.get(job.id).result is None

    def test_complete_and_claim_stores_results(self, jobs: JobRepository) -> None:
        if not jobs.capabilities.complete_and_claim:
            pytest.skip("the store offers no complete_and_claim (capabilities)")
        completing = cast(CompletingJobRepository, jobs)
        submit(jobs, *(new_job() for _ in range(4)), now=T0)
        first = claim(jobs, now=at(1), limit=2)
        results = {first[0].id: '{"n":1}'}
        done, claimed = completing.complete_and_claim(
            [ref(j) for j in first],
            worker_id="w1",
            limit=2,
            lease=LEASE,
            now=at(2),
            results=results,
        )
        assert {j.id: j.result for j in done} == {first[0].id: {"n": 1}, first[1].id: None}
        assert len(claimed) == 2
        assert all(j.result is None and j.status is Status.PROCESSING for j in claimed)
        assert jobs.get(first[0].id).result == {"n": 1}


class GetManyContract(StoreFixtures):
    def test_get_many_returns_the_jobs_that_exist(self, jobs: JobRepository) -> None:
        made = submit(jobs, *(new_job() for _ in range(5)), now=T0)
        unknown = JobId(uuid.uuid4())
        wanted = [made[3].id, unknown, made[0].id, made[3].id]
        found = jobs.get_many(wanted)
        assert sorted(ids(found)) == sorted([made[0].id, made[3].id])
        assert all(job == jobs.get(job.id) for job in found)

    def test_get_many_of_nothing_is_empty(self, jobs: JobRepository) -> None:
        submit(jobs, new_job(), now=T0)
        assert jobs.get_many([]) == []
        assert jobs.get_many([JobId(uuid.uuid4())]) == []

    def test_get_many_reads_many_ids_at_once(self, jobs: JobRepository) -> None:
        made = submit(jobs, *(new_job() for _ in range(1500)), now=T0)
        assert sorted(ids(jobs.get_many(ids(made)))) == sorted(ids(made))
