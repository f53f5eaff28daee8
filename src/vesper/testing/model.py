"""A model-based test: random operation sequences against the store under test and the
in-memory reference store, compared call by call and state by state.

Both stores get the same NewJob objects (so job ids match) and the same explicit `now`
values. Lease tokens differ between them: each claim records a pair of references, one
per store, and results are compared with tokens and insertion numbers (`seq`) blanked;
the relative insertion order is still compared through `find`, which is newest first.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import ClassVar, TypeVar

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from vesper.adapters.memory import InMemoryJobRepository
from vesper.application.ports import JobRepository, Submitted
from vesper.domain.errors import VesperError
from vesper.domain.job import Failure, Job, JobId, LeaseRef
from vesper.domain.query import JobQuery
from vesper.domain.states import Status
from vesper.domain.submission import NewJob
from vesper.testing.fixtures import T0, StoreFactory, StoreFixtures, StoreOpener, all_jobs
from vesper.testing.fixtures import new_job as build_job
from vesper.testing.fixtures import ref as ref_of

R = TypeVar("R")
NO_TOKEN = uuid.UUID(int=0)
WORKERS = ("w1", "w2")


@attrs.frozen
class JobSpec:
    type: str
    priority: int
    key: str | None
    delay: int  # seconds
    max_retries: int
    payload: int


@attrs.frozen
class HeldLease:
    """One claim of one job, as each store leased it; stays usable once stale."""

    oracle: LeaseRef
    subject: LeaseRef


def new_job(spec: JobSpec) -> NewJob:
    return build_job(
        spec.type,
        priority=spec.priority,
        key=spec.key,
        delay=timedelta(seconds=spec.delay),
        max_retries=spec.max_retries,
        payload={"n": spec.payload},
    )


specs = st.builds(
    JobSpec,
    type=st.sampled_from(["a", "b"]),
    priority=st.integers(0, 2),
    key=st.none() | st.sampled_from(["k0", "k1", "k2"]),
    delay=st.sampled_from([0, 0, 5, 20]),
    max_retries=st.integers(0, 2),
    payload=st.integers(0, 1),
)


def norm(job: Job) -> Job:
    """The job without what legitimately differs between two stores."""
    lease = attrs.evolve(job.lease, token=NO_TOKEN) if job.lease is not None else None
    return attrs.evolve(job, lease=lease, seq=0)


def norm_all(jobs: Sequence[Job]) -> list[Job]:
    return sorted((norm(j) for j in jobs), key=lambda j: j.id)


class StoreModel(RuleBasedStateMachine):
    jobs = Bundle("jobs")
    keyed = Bundle("keyed")
    leases = Bundle("leases")

    def __init__(self, opener: StoreOpener) -> None:
        super().__init__()
        self._exit = ExitStack()
        self.subject: JobRepository = self._exit.enter_context(opener()).jobs
        self.oracle = InMemoryJobRepository()
        self.now: datetime = T0

    def teardown(self) -> None:
        self._exit.close()

    def both(self, action: Callable[[JobRepository], R]) -> tuple[R, R] | None:
        """Run `action` on both stores; both must raise the same VesperError, or neither."""
        try:
            expected = action(self.oracle)
        except VesperError as exc:
            with pytest.raises(type(exc)):
                action(self.subject)
            return None
        return expected, action(self.subject)

    # -- submit -----------------------------------------------------------------------

    def _submit(self, batch: list[JobSpec]) -> object:
        news = [new_job(spec) for spec in batch]
        results = self.both(lambda repo: repo.submit(news, now=self.now))
        if results is None:
            return multiple()
        expected, actual = results
        assert summary(actual) == summary(expected)
        return multiple(*(s.job.id for s in expected if s.created))

    @initialize(target=jobs, batch=st.lists(specs, min_size=1, max_size=4))
    def seed(self, batch: list[JobSpec]) -> object:
        return self._submit(batch)

    @rule(target=jobs, spec=specs)
    def submit_one(self, spec: JobSpec) -> object:
        return self._submit([spec])

    @rule(target=jobs, batch=st.lists(specs, min_size=2, max_size=4))
    def submit_batch(self, batch: list[JobSpec]) -> object:
        return self._submit(batch)

    @rule(target=keyed, spec=specs, key=st.sampled_from(["k0", "k1", "k2"]))
    def submit_keyed(self, spec: JobSpec, key: str) -> object:
        keyed = attrs.evolve(spec, key=key)
        self._submit([keyed])
        return keyed

    @rule(spec=keyed, change=st.booleans())
    def resubmit(self, spec: JobSpec, change: bool) -> None:
        """The same key again: a replay, or (another payload) a conflict."""
        self._submit([attrs.evolve(spec, payload=spec.payload + 10) if change else spec])

    # -- claim and its outcomes -------------------------------------------------------

    @rule(
        target=leases,
        worker=st.sampled_from(WORKERS),
        limit=st.integers(1, 3),
        types=st.sampled_from([None, ("a",), ("b",), ("a", "b")]),
        lease=st.sampled_from([5, 10, 30]),
    )
    def claim(self, worker: str, limit: int, types: tuple[str, ...] | None, lease: int) -> object:
        def action(repo: JobRepository) -> list[Job]:
            return repo.claim(
                worker_id=worker,
                limit=limit,
                lease=timedelta(seconds=lease),
                types=types,
                now=self.now,
            )

        expected, actual = self.both(action) or ([], [])
        assert [norm(j) for j in actual] == [norm(j) for j in expected]
        return multiple(
            *(
                HeldLease(oracle=ref_of(e), subject=ref_of(a))
                for e, a in zip(expected, actual, strict=True)
            )
        )

    @rule(held=st.lists(leases, min_size=1, max_size=3, unique=True))
    def complete(self, held: list[HeldLease]) -> None:
        expected = self.oracle.complete([h.oracle for h in held], now=self.now)
        actual = self.subject.complete([h.subject for h in held], now=self.now)
        assert norm_all(actual) == norm_all(expected)

    @rule(
        held=st.lists(leases, min_size=1, max_size=2, unique=True),
        delay=st.sampled_from([None, 0, 3, 10]),
        error=st.sampled_from(["boom", "ünïcode ✗"]),
    )
    def fail(self, held: list[HeldLease], delay: int | None, error: str) -> None:
        retry = timedelta(seconds=delay) if delay is not None else None

        def failures(refs: list[LeaseRef]) -> list[Failure]:
            return [Failure(lease=r, error=error, retry_delay=retry) for r in refs]

        expected = self.oracle.fail(failures([h.oracle for h in held]), now=self.now)
        actual = self.subject.fail(failures([h.subject for h in held]), now=self.now)
        assert norm_all(actual) == norm_all(expected)

    @rule(held=st.lists(leases, min_size=1, max_size=3, unique=True), lease=st.integers(1, 30))
    def renew(self, held: list[HeldLease], lease: int) -> None:
        length = timedelta(seconds=lease)
        expected = self.oracle.renew([h.oracle for h in held], lease=length, now=self.now)
        actual = self.subject.renew([h.subject for h in held], lease=length, now=self.now)
        assert norm_all(actual) == norm_all(expected)

    @rule(held=st.lists(leases, min_size=1, max_size=3, unique=True))
    def release(self, held: list[HeldLease]) -> None:
        expected = self.oracle.release([h.oracle for h in held], now=self.now)
        actual = self.subject.release([h.subject for h in held], now=self.now)
        assert norm_all(actual) == norm_all(expected)

    @rule(dead=st.lists(st.sampled_from(WORKERS), max_size=2, unique=True))
    def expire(self, dead: list[str]) -> None:
        results = self.both(lambda repo: repo.expire(worker_ids=dead, now=self.now))
        assert results is not None
        assert norm_all(results[1]) == norm_all(results[0])

    # -- management -------------------------------------------------------------------

    @rule(job_id=jobs | st.uuids().map(JobId))
    def cancel(self, job_id: JobId) -> None:
        results = self.both(lambda repo: repo.cancel(job_id, now=self.now))
        if results is not None:
            assert norm(results[1]) == norm(results[0])

    @rule(job_id=jobs | st.uuids().map(JobId))
    def retry(self, job_id: JobId) -> None:
        results = self.both(lambda repo: repo.retry(job_id, now=self.now))
        if results is not None:
            assert norm(results[1]) == norm(results[0])

    @rule(
        status=st.none() | st.sampled_from(Status),
        job_type=st.none() | st.sampled_from(["a", "b"]),
        priority=st.none() | st.integers(0, 2),
        limit=st.integers(1, 4),
    )
    def find(
        self, status: Status | None, job_type: str | None, priority: int | None, limit: int
    ) -> None:
        query = JobQuery(status=status, type=job_type, priority=priority, limit=limit)
        results = self.both(lambda repo: all_jobs(repo, query))
        assert results is not None
        assert [norm(j) for j in results[1]] == [norm(j) for j in results[0]]

    @rule(seconds=st.integers(0, 40))
    def advance(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    # -- the whole state --------------------------------------------------------------

    @invariant()
    def same_jobs_in_same_order(self) -> None:
        results = self.both(lambda repo: all_jobs(repo, JobQuery(limit=7)))
        assert results is not None
        assert [norm(j) for j in results[1]] == [norm(j) for j in results[0]]

    @invariant()
    def same_stats(self) -> None:
        results = self.both(lambda repo: repo.stats(now=self.now))
        assert results is not None
        expected, actual = results
        assert nonzero(actual.counts) == nonzero(expected.counts)
        assert actual.oldest_due_run_at == expected.oldest_due_run_at


def summary(results: Sequence[Submitted]) -> list[tuple[Job, bool]]:
    return [(norm(s.job), s.created) for s in results]


def nonzero(counts: Mapping[tuple[Status, int], int]) -> dict[tuple[Status, int], int]:
    return {key: n for key, n in counts.items() if n}


class ModelContract(StoreFixtures):
    """Random operation sequences agree with the in-memory reference store."""

    model_examples: ClassVar[int] = 30
    model_steps: ClassVar[int] = 30

    def test_model_random_operations_match_reference_store(
        self, store_factory: StoreFactory
    ) -> None:
        # hypothesis takes any factory of machines (its docstring); its annotation is narrower
        run_state_machine_as_test(
            lambda: StoreModel(store_factory()),  # type: ignore[arg-type]
            settings=settings(
                max_examples=self.model_examples,
                stateful_step_count=self.model_steps,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
