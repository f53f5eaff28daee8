"""submit with a unique_key: the active job holding it is returned instead; free again
once that job has finished."""

from __future__ import annotations

from datetime import timedelta

from vesper.application.ports import JobRepository
from vesper.domain.states import Status
from vesper.testing.fixtures import (
    T0,
    StoreFixtures,
    all_jobs,
    at,
    claim_one,
    failure,
    new_job,
    ref,
)


class UniqueKeyContract(StoreFixtures):
    def test_an_active_job_is_returned_for_its_unique_key(self, jobs: JobRepository) -> None:
        [first] = jobs.submit([new_job(unique_key="u1", payload={"n": 1})], now=T0)
        assert first.created
        assert first.job.unique_key == "u1"
        [again] = jobs.submit([new_job(unique_key="u1", payload={"n": 2})], now=at(1))
        assert (again.job, again.created) == (first.job, False)
        assert len(all_jobs(jobs)) == 1

    def test_processing_and_failed_jobs_hold_their_key(self, jobs: JobRepository) -> None:
        jobs.submit([new_job(unique_key="u1")], now=T0)
        running = claim_one(jobs, now=at(1))
        [held] = jobs.submit([new_job(unique_key="u1")], now=at(2))
        assert (held.job.id, held.created) == (running.id, False)
        jobs.fail([failure(running, timedelta(seconds=60))], now=at(3))
        [still] = jobs.submit([new_job(unique_key="u1")], now=at(4))
        assert (still.job.id, still.job.status, still.created) == (
            running.id,
            Status.FAILED,
            False,
        )

    def test_the_key_is_free_once_the_job_finished(self, jobs: JobRepository) -> None:
        [first] = jobs.submit([new_job(unique_key="u1")], now=T0)
        running = claim_one(jobs, now=at(1))
        jobs.complete([ref(running)], now=at(2))
        [second] = jobs.submit([new_job(unique_key="u1")], now=at(3))
        assert second.created
        assert second.job.id != first.job.id
        jobs.cancel(second.job.id, now=at(4))
        [third] = jobs.submit([new_job(unique_key="u1")], now=at(5))
        assert third.created
        assert third.job.id not in {first.job.id, second.job.id}

    def test_one_key_twice_in_a_batch_inserts_one_job(self, jobs: JobRepository) -> None:
        results = jobs.submit(
            [new_job(unique_key="u1"), new_job(), new_job(unique_key="u1")], now=T0
        )
        assert [s.created for s in results] == [True, True, False]
        assert results[2].job == results[0].job
        assert len(all_jobs(jobs)) == 2

    def test_different_keys_are_independent(self, jobs: JobRepository) -> None:
        results = jobs.submit([new_job(unique_key="u1"), new_job(unique_key="u2")], now=T0)
        assert all(s.created for s in results)

    def test_a_bound_idempotency_key_wins(self, jobs: JobRepository) -> None:
        [first] = jobs.submit([new_job(key="k1", unique_key="u1")], now=T0)
        [replay] = jobs.submit([new_job(key="k1", unique_key="u1")], now=at(1))
        assert (replay.job, replay.created) == (first.job, False)
