"""submit with a unique_key: the active job of the same queue holding it is returned
instead; free again once that job has finished. retry and bulk retry never take a key
another active job of the queue holds. A key is held per queue: the tests naming two
queues are skipped by a store without named queues."""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs
import pytest

from vesper.application.management import BulkJobs
from vesper.application.ports import JobRepository, QueueingJobRepository
from vesper.domain.bulk import BulkAction, BulkFilter
from vesper.domain.errors import IdempotencyConflict, IllegalTransition, UniqueKeyHeld
from vesper.domain.job import JobRecord
from vesper.domain.states import Status
from vesper.testing.fixtures import (
    T0,
    StoreFixtures,
    all_jobs,
    at,
    claim,
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

    def test_an_idempotency_key_twice_in_a_batch_conflicts_whatever_the_first_became(
        self, jobs: JobRepository
    ) -> None:
        """A batch repeats an idempotency key with another job; its first job was kept
        out by a unique key held: still a conflict (one call, one meaning per key), and
        nothing of the batch is inserted. (The model test found the stores differing.)"""
        [holder] = jobs.submit([new_job(unique_key="u1")], now=T0)
        batch = [new_job(key="k1", unique_key="u1"), new_job(key="k1", payload={"n": 2})]
        with pytest.raises(IdempotencyConflict):
            jobs.submit(batch, now=at(1))
        assert all_jobs(jobs) == [holder.job]
        # the same job twice: both get the holder back
        replays = jobs.submit([batch[0], batch[0]], now=at(2))
        assert [(s.job, s.created) for s in replays] == [(holder.job, False)] * 2

    def test_one_unique_key_in_two_queues_makes_two_active_jobs(
        self, queueing: QueueingJobRepository
    ) -> None:
        jobs = queueing
        [first] = jobs.submit([new_job(queue="q1", unique_key="u1")], now=T0)
        [other] = jobs.submit([new_job(queue="q2", unique_key="u1")], now=at(1))
        assert (first.created, other.created) == (True, True)
        assert (other.job.queue, other.job.unique_key, other.job.status) == (
            "q2",
            "u1",
            Status.PENDING,
        )
        # each queue returns its own holder, in one batch too
        again = jobs.submit(
            [new_job(queue="q2", unique_key="u1"), new_job(queue="q1", unique_key="u1")],
            now=at(2),
        )
        assert [(s.job.id, s.created) for s in again] == [
            (other.job.id, False),
            (first.job.id, False),
        ]
        # a batch with the key in a third queue twice and in a fourth: one job each
        fresh = jobs.submit(
            [
                new_job(queue="q3", unique_key="u1"),
                new_job(queue="q4", unique_key="u1"),
                new_job(queue="q3", unique_key="u1"),
            ],
            now=at(3),
        )
        assert [s.created for s in fresh] == [True, True, False]
        assert fresh[2].job == fresh[0].job
        assert sorted((j.queue, j.status) for j in all_jobs(jobs)) == [
            (q, Status.PENDING) for q in ("q1", "q2", "q3", "q4")
        ]

    def test_a_unique_key_is_freed_in_its_own_queue_only(
        self, queueing: QueueingJobRepository
    ) -> None:
        jobs = queueing
        [first] = jobs.submit([new_job(queue="q1", unique_key="u1")], now=T0)
        [other] = jobs.submit([new_job(queue="q2", unique_key="u1")], now=at(1))
        jobs.cancel(first.job.id, now=at(2))
        [renewed, held] = jobs.submit(
            [new_job(queue="q1", unique_key="u1"), new_job(queue="q2", unique_key="u1")],
            now=at(3),
        )
        assert renewed.created
        assert renewed.job.id not in {first.job.id, other.job.id}
        assert (held.job.id, held.created) == (other.job.id, False)


def dead_with_key(
    jobs: JobRepository, unique_key: str, *, now: datetime, queue: str | None = None
) -> JobRecord:
    """A job holding `unique_key` (in `queue`; None: "default"), sent to dlq (claimed and
    failed, no retries) at `now`. Its type is the key: the claim takes only it."""
    [made] = jobs.submit(
        [new_job(unique_key, unique_key=unique_key, max_retries=0, queue=queue)], now=now
    )
    [running] = claim(jobs, now=now, types=[unique_key])
    [dead] = jobs.fail([failure(running, None)], now=now)
    assert (made.created, dead.status) == (True, Status.DLQ)
    return dead


class UniqueRetryContract(StoreFixtures):
    """retry and bulk retry never make a second active job with one unique key."""

    def test_retry_is_refused_while_another_job_holds_the_key(self, jobs: JobRepository) -> None:
        dead = dead_with_key(jobs, "u1", now=T0)
        [holder] = jobs.submit([new_job("u1", unique_key="u1")], now=at(1))
        assert holder.created
        with pytest.raises(UniqueKeyHeld) as refused:
            jobs.retry(dead.id, now=at(2))
        assert (refused.value.job_id, refused.value.held_by) == (dead.id, holder.job.id)
        assert (refused.value.key, refused.value.queue, refused.value.action) == (
            "u1",
            "default",
            "retry",
        )
        assert isinstance(refused.value, IllegalTransition)
        assert str(holder.job.id) in str(refused.value)
        assert jobs.get(dead.id) == dead  # left as it was
        # once the holder has finished, the retry goes through and the job holds the key
        jobs.cancel(holder.job.id, now=at(3))
        retried = jobs.retry(dead.id, now=at(4))
        assert retried == dead.retry(now=at(4))
        [again] = jobs.submit([new_job("u1", unique_key="u1")], now=at(5))
        assert (again.job.id, again.created) == (dead.id, False)

    def test_a_failed_job_retries_while_it_holds_its_own_key(self, jobs: JobRepository) -> None:
        jobs.submit([new_job(unique_key="u1")], now=T0)
        running = claim_one(jobs, now=at(1))
        [failed] = jobs.fail([failure(running, timedelta(hours=1))], now=at(2))
        assert jobs.retry(failed.id, now=at(3)) == failed.retry(now=at(3))

    def test_bulk_retry_skips_jobs_whose_key_is_held(self, jobs: JobRepository) -> None:
        held = dead_with_key(jobs, "u1", now=T0)
        [holder] = jobs.submit([new_job("u1", unique_key="u1")], now=at(1))
        free = dead_with_key(jobs, "u2", now=at(2))
        plain = dead_with_key(jobs, "u3", now=at(3))
        batch = jobs.bulk(BulkAction.RETRY, BulkFilter(), limit=10, now=at(4))
        assert (batch.changed, batch.skipped) == (2, 1)
        assert batch.last_seq == max(held.seq, free.seq, plain.seq)
        assert jobs.get(held.id) == held
        assert jobs.get(holder.job.id).status is Status.PENDING
        assert {jobs.get(free.id).status, jobs.get(plain.id).status} == {Status.PENDING}

    def test_bulk_retry_takes_the_first_of_jobs_sharing_a_key(self, jobs: JobRepository) -> None:
        first = dead_with_key(jobs, "u1", now=T0)
        second = dead_with_key(jobs, "u1", now=at(1))  # the key was free again
        batch = jobs.bulk(BulkAction.RETRY, BulkFilter(), limit=10, now=at(2))
        assert (batch.changed, batch.skipped, batch.last_seq) == (1, 1, second.seq)
        assert jobs.get(first.id) == first.retry(now=at(2))
        assert jobs.get(second.id) == second
        # across batches too: the second batch finds the key held by the first job
        third = dead_with_key(jobs, "u2", now=at(3))
        fourth = dead_with_key(jobs, "u2", now=at(4))
        where = BulkFilter(after_seq=second.seq)
        one = jobs.bulk(BulkAction.RETRY, where, limit=1, now=at(5))
        two = jobs.bulk(BulkAction.RETRY, attrs.evolve(where, after_seq=one.last_seq), limit=1)
        assert [(b.changed, b.skipped) for b in (one, two)] == [(1, 0), (0, 1)]
        assert (jobs.get(third.id).status, jobs.get(fourth.id)) == (Status.PENDING, fourth)

    def test_retry_is_not_refused_for_a_holder_in_another_queue(
        self, queueing: QueueingJobRepository
    ) -> None:
        jobs = queueing
        dead = dead_with_key(jobs, "u1", now=T0, queue="q1")
        [elsewhere] = jobs.submit([new_job("u1", queue="q2", unique_key="u1")], now=at(1))
        assert elsewhere.created  # the key is free in q2: the dead job holds nothing
        retried = jobs.retry(dead.id, now=at(2))
        assert retried == dead.retry(now=at(2))
        # both hold the key now, each in its queue
        again = jobs.submit(
            [
                new_job("u1", queue="q1", unique_key="u1"),
                new_job("u1", queue="q2", unique_key="u1"),
            ],
            now=at(3),
        )
        assert [(s.job.id, s.created) for s in again] == [
            (dead.id, False),
            (elsewhere.job.id, False),
        ]
        # and a holder in the job's own queue still refuses it
        jobs.cancel(dead.id, now=at(4))
        [holder] = jobs.submit([new_job("u1", queue="q1", unique_key="u1")], now=at(5))
        with pytest.raises(UniqueKeyHeld) as refused:
            jobs.retry(dead.id, now=at(6))
        assert (refused.value.queue, refused.value.held_by) == ("q1", holder.job.id)

    def test_bulk_retry_skips_for_a_holder_in_the_jobs_own_queue_only(
        self, queueing: QueueingJobRepository
    ) -> None:
        jobs = queueing
        held = dead_with_key(jobs, "u1", now=T0, queue="q1")
        elsewhere = dead_with_key(jobs, "u1", now=at(1), queue="q2")
        [holder] = jobs.submit([new_job("u1", queue="q1", unique_key="u1")], now=at(2))
        # two finished jobs sharing a free key, each in its own queue: both are retried
        one = dead_with_key(jobs, "u2", now=at(3), queue="q1")
        two = dead_with_key(jobs, "u2", now=at(4), queue="q2")
        batch = jobs.bulk(BulkAction.RETRY, BulkFilter(), limit=10, now=at(5))
        assert (batch.changed, batch.skipped) == (3, 1)
        assert jobs.get(held.id) == held
        assert jobs.get(holder.job.id).status is Status.PENDING
        for job in (elsewhere, one, two):
            assert jobs.get(job.id) == job.retry(now=at(5))
        # the queue filter: a retry of q2's jobs ignores q1's holders
        jobs.cancel(elsewhere.id, now=at(6))
        only = jobs.bulk(
            BulkAction.RETRY, BulkFilter(queue="q2", status=Status.CANCELLED), limit=10, now=at(7)
        )
        assert (only.changed, only.skipped) == (1, 0)

    def test_the_bulk_use_case_reports_the_skipped_jobs(self, jobs: JobRepository) -> None:
        # before the store's clock: the use case takes jobs last changed before its start
        start = jobs.now() - timedelta(minutes=1)
        for second in range(3):
            dead_with_key(jobs, "u1", now=start + timedelta(seconds=second))  # one key
        dead_with_key(jobs, "u2", now=start + timedelta(seconds=3))
        done = BulkJobs(jobs, batch=1)(BulkAction.RETRY, BulkFilter(status=Status.DLQ))
        assert (done.changed, done.skipped) == (2, 2)
        statuses = sorted(j.status.value for j in all_jobs(jobs))
        assert statuses == ["dlq", "dlq", "pending", "pending"]
