"""prune and delete: finished jobs go, after their status's age or on request; nothing
else ever does, and a deleted job's idempotency key is free again."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vesper.application.ports import JobRepository
from vesper.domain.errors import IllegalTransition, JobNotFound
from vesper.domain.job import JobRecord
from vesper.domain.retention import prunable
from vesper.domain.states import FINISHED, Status
from vesper.testing.fixtures import (
    T0,
    StoreFixtures,
    StoreOpener,
    at,
    claim,
    failure,
    new_job,
    ref,
    submit,
)

HOUR = timedelta(hours=1)


def finish(jobs: JobRepository, job: JobRecord, status: Status, seconds: float) -> JobRecord:
    """Bring the pending `job` to `status` at T0 + `seconds` (its only claimable job
    then: every job here has a type of its own)."""
    now = at(seconds)
    if status is Status.PENDING:
        return job
    if status is Status.CANCELLED:
        return jobs.cancel(job.id, now=now)
    [claimed] = claim(jobs, now=now, types=[job.type], limit=1)
    if status is Status.PROCESSING:
        return claimed
    if status is Status.DONE:
        [done] = jobs.complete([ref(claimed)], now=now)
        return done
    delay = timedelta(hours=1) if status is Status.FAILED else None
    [failed] = jobs.fail([failure(claimed, delay)], now=now)
    assert failed.status is status
    return failed


def make(jobs: JobRepository, status: Status, seconds: float, key: str | None = None) -> JobRecord:
    """A job in `status`, which it reached (finished, for the finished ones) at T0 + seconds."""
    [job] = submit(jobs, new_job(f"t-{status.value}-{uuid.uuid4().hex[:12]}", key=key), now=T0)
    return finish(jobs, job, status, seconds)


def present(jobs: JobRepository, job: JobRecord) -> bool:
    try:
        jobs.get(job.id)
    except JobNotFound:
        return False
    return True


class PruneContract(StoreFixtures):
    def test_prune_deletes_finished_jobs_past_their_statuses_age(self, jobs: JobRepository) -> None:
        old = {s: make(jobs, s, 10) for s in FINISHED}
        young = {s: make(jobs, s, 3000) for s in FINISHED}
        ages = {Status.DONE: HOUR, Status.DLQ: HOUR, Status.CANCELLED: HOUR}
        counts = jobs.prune(ages, limit=100, now=at(3600 + 10))  # exactly an hour after 10
        assert counts == dict.fromkeys(FINISHED, 1)
        assert not any(present(jobs, j) for j in old.values())
        assert all(present(jobs, j) for j in young.values())

    def test_prune_keeps_statuses_it_is_not_given(self, jobs: JobRepository) -> None:
        done, dlq = make(jobs, Status.DONE, 1), make(jobs, Status.DLQ, 1)
        assert jobs.prune({Status.DONE: timedelta(0)}, limit=100, now=at(10)) == {Status.DONE: 1}
        assert not present(jobs, done)
        assert jobs.get(dlq.id) == dlq  # dlq kept for ever: not in the ages

    def test_prune_with_age_zero_deletes_what_just_finished(self, jobs: JobRepository) -> None:
        done = make(jobs, Status.DONE, 5)
        assert jobs.prune({Status.DONE: timedelta(0)}, limit=10, now=at(4)) == {}
        assert jobs.prune({Status.DONE: timedelta(0)}, limit=10, now=at(5)) == {Status.DONE: 1}
        assert not present(jobs, done)

    def test_prune_deletes_at_most_limit_oldest_first(self, jobs: JobRepository) -> None:
        made = [make(jobs, Status.DONE, s) for s in (30, 10, 20, 40)]
        ages = {Status.DONE: timedelta(0)}
        assert jobs.prune(ages, limit=2, now=at(100)) == {Status.DONE: 2}
        assert [present(jobs, j) for j in made] == [True, False, False, True]
        assert jobs.prune(ages, limit=5, now=at(100)) == {Status.DONE: 2}
        assert jobs.prune(ages, limit=5, now=at(100)) == {}

    def test_prune_refuses_unfinished_statuses_and_negative_ages(self, jobs: JobRepository) -> None:
        pending = make(jobs, Status.PENDING, 0)
        with pytest.raises(ValueError, match="pending"):
            jobs.prune({Status.PENDING: timedelta(0)}, limit=10, now=at(10))
        with pytest.raises(ValueError, match="negative"):
            jobs.prune({Status.DONE: timedelta(seconds=-1)}, limit=10, now=at(10))
        assert jobs.get(pending.id) == pending

    def test_a_pruned_jobs_idempotency_key_is_free_again(self, jobs: JobRepository) -> None:
        kept = make(jobs, Status.DONE, 1, key="k1")
        # bound while the job is kept: a replay returns it, another body is refused
        [replay] = jobs.submit([new_job(kept.type, key="k1")], now=at(2))
        assert (replay.job.id, replay.created) == (kept.id, False)
        jobs.prune({Status.DONE: timedelta(0)}, limit=10, now=at(5))
        [again] = jobs.submit([new_job("another type", key="k1")], now=at(6))
        assert again.created
        assert again.job.id != kept.id

    def test_a_deleted_jobs_idempotency_key_is_free_again(self, jobs: JobRepository) -> None:
        kept = make(jobs, Status.CANCELLED, 1, key="k2")
        jobs.delete(kept.id, now=at(2))
        [again] = jobs.submit([new_job("another type", key="k2")], now=at(3))
        assert again.created
        assert again.job.id != kept.id

    def test_concurrent_pruners_delete_each_job_once(
        self, jobs: JobRepository, store_opener: StoreOpener
    ) -> None:
        made = [make(jobs, Status.DONE, i % 7) for i in range(60)]
        counts: list[int] = []
        errors: list[BaseException] = []
        with ExitStack() as stack:
            handles = [stack.enter_context(store_opener()).jobs for _ in range(3)]

            def prune(repo: JobRepository) -> None:
                try:
                    for _ in range(20):  # bounded: 60 jobs, batches of 5
                        deleted = repo.prune({Status.DONE: timedelta(0)}, limit=5, now=at(100))
                        counts.append(sum(deleted.values()))
                except BaseException as exc:  # reported below
                    errors.append(exc)

            threads = [threading.Thread(target=prune, args=(h,)) for h in handles]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
        assert not errors
        assert sum(counts) == len(made)
        assert not any(present(jobs, j) for j in made)


_STATUSES = st.sampled_from(list(Status))
_AGE = st.none() | st.sampled_from([0, 1, 30, 3600]).map(lambda s: timedelta(seconds=s))


class PruneModelContract(StoreFixtures):
    @pytest.fixture
    def shared_jobs(self, store_opener: StoreOpener) -> Iterator[JobRepository]:
        with store_opener() as store:
            yield store.jobs

    def test_prune_deletes_exactly_the_finished_jobs_past_their_age(
        self, shared_jobs: JobRepository
    ) -> None:
        """Random states, finishing times and ages: a prune deletes a job if and only if
        it is finished and past its status's age; pending, failed and processing jobs
        are never touched, whatever the ages."""

        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(
            states=st.lists(st.tuples(_STATUSES, st.integers(0, 7200)), min_size=1, max_size=8),
            ages=st.fixed_dictionaries(dict.fromkeys(Status, _AGE)),
            later=st.integers(0, 7200),
        )
        def check(
            states: list[tuple[Status, int]], ages: dict[Status, timedelta | None], later: int
        ) -> None:
            jobs = shared_jobs
            made = [make(jobs, status, seconds) for status, seconds in states]
            older_than = {s: a for s, a in ages.items() if a is not None and s in FINISHED}
            now = at(later)
            jobs.prune(older_than, limit=10_000, now=now)
            for job in made:
                if prunable(job, older_than, now):
                    assert not present(jobs, job), f"{job.status} job kept: {job}"
                else:
                    assert jobs.get(job.id) == job, f"{job.status} job changed or deleted"

        check()


class DeleteContract(StoreFixtures):
    def test_delete_removes_a_finished_job_and_returns_it(self, jobs: JobRepository) -> None:
        for status in FINISHED:
            job = make(jobs, status, 1)
            assert jobs.delete(job.id, now=at(2)) == job
            with pytest.raises(JobNotFound):
                jobs.get(job.id)

    def test_delete_refuses_unfinished_jobs(self, jobs: JobRepository) -> None:
        for status in (Status.PENDING, Status.PROCESSING, Status.FAILED):
            job = make(jobs, status, 1)
            with pytest.raises(IllegalTransition) as raised:
                jobs.delete(job.id, now=at(2))
            assert (raised.value.status, raised.value.action) == (status, "delete")
            assert jobs.get(job.id) == job

    def test_delete_of_an_unknown_job_is_not_found(self, jobs: JobRepository) -> None:
        job = make(jobs, Status.DONE, 1)
        jobs.delete(job.id, now=at(2))
        with pytest.raises(JobNotFound):
            jobs.delete(job.id, now=at(3))
