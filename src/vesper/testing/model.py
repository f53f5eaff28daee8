"""A model-based test: random operation sequences against the store under test and the
in-memory reference store, compared call by call and state by state.

Both stores get the same NewJob objects (so job ids match) and the same explicit `now`
values. Lease tokens differ between them: each claim records a pair of references, one
per store, and results are compared with tokens and insertion numbers (`seq`) blanked;
the relative insertion order is still compared through `find`, which is newest first.
Rules pick their targets from the reference store's state (a current lease, a job that
can be retried) most of the time, so that short runs reach the interesting transitions.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import ClassVar, TypeVar, cast

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from vesper.adapters.memory import InMemoryJobRepository
from vesper.application.ports import JobRepository, SummaryJobRepository
from vesper.domain.bulk import BulkAction, BulkFilter
from vesper.domain.errors import VesperError
from vesper.domain.job import Failure, JobId, JobRecord, LeaseRef, Snoozed
from vesper.domain.query import JobQuery
from vesper.domain.queues import QueueChange
from vesper.domain.states import FINISHED, Status, allowed
from vesper.domain.stats import QueueSummary
from vesper.testing.fixtures import T0, StoreFactory, StoreFixtures, StoreOpener, all_jobs
from vesper.testing.fixtures import claim as claim_from
from vesper.testing.fixtures import ref as ref_of
from vesper.testing.model_parts import (
    HeldLease,
    JobSpec,
    check_unique,
    holders,
    nonzero,
    nonzero_status,
    norm,
    norm_all,
    plain,
    queue_changes,
    queueing,
    slot_of,
    specs,
    summary,
)

R = TypeVar("R")
LeaseAction = Callable[[JobRepository, list[LeaseRef]], list[JobRecord]]
WORKERS = ("w1", "w2")
CURRENT_MOSTLY = st.sampled_from([True, True, True, False])  # stale leases a quarter of the time
RESULTS = st.sampled_from([None, None, '{"n":1}', '["a",2]'])  # JSON text, as complete takes it
PRUNE_AGES = st.dictionaries(
    st.sampled_from(sorted(FINISHED)),
    st.sampled_from([0, 5, 30]).map(lambda s: timedelta(seconds=s)),
)


class StoreModel(RuleBasedStateMachine):
    submitted = Bundle("submitted")

    def __init__(self, opener: StoreOpener) -> None:
        super().__init__()
        self._exit = ExitStack()
        self.subject: JobRepository = self._exit.enter_context(opener()).jobs
        self.oracle = InMemoryJobRepository()
        self.now: datetime = T0
        self.held: list[HeldLease] = []
        self.queues = self.subject.capabilities.queues

    def teardown(self) -> None:
        self._exit.close()

    def both(self, action: Callable[[JobRepository], R]) -> tuple[R, R] | None:
        """Run `action` on both stores; both must raise the same VesperError, or neither."""
        try:
            expected = action(self.oracle)
        except VesperError as exc:
            try:
                unexpected = action(self.subject)
            except type(exc):
                return None
            raise AssertionError(
                f"the reference store raised {exc!r}; the store under test returned {unexpected!r}"
            ) from None
        return expected, action(self.subject)

    def pick_leases(self, data: st.DataObject, current_only: bool) -> list[HeldLease]:
        """One to three leases: current ones, or any (stale ones included)."""
        pool = self.held
        if current_only:
            pool = [h for h in self.held if self._current(h.oracle)]
        if not pool:
            pool = self.held
        return data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))

    def _current(self, lease: LeaseRef) -> bool:
        """Whether `lease` is current in the reference store (its job may be deleted)."""
        found = self.oracle.get_many([lease.job_id])
        return bool(found) and found[0].holds(lease, self.now)

    def pick_job(self, data: st.DataObject, statuses: frozenset[Status]) -> JobId:
        """A job in one of `statuses` if there is one, else any job, or an unknown id."""
        jobs = all_jobs(self.oracle)
        fitting = [j.id for j in jobs if j.status in statuses] or [j.id for j in jobs]
        anything = st.uuids().map(JobId)
        return data.draw(st.sampled_from(fitting) | anything if fitting else anything)

    # -- submit -----------------------------------------------------------------------

    def _submit(self, batch: list[JobSpec]) -> object:
        if not self.queues:
            batch = [plain(spec) for spec in batch]
        news = [spec.new_job() for spec in batch]
        held = holders(all_jobs(self.oracle))
        results = self.both(lambda repo: repo.submit(news, now=self.now))
        if results is None:
            return multiple()
        expected, actual = results
        assert summary(actual) == summary(expected)
        check_unique(news, actual, held)
        return multiple(*(spec for spec in batch if spec.key is not None))

    @initialize(target=submitted, batch=st.lists(specs, min_size=1, max_size=4))
    def seed(self, batch: list[JobSpec]) -> object:
        return self._submit(batch)

    @rule(target=submitted, batch=st.lists(specs, min_size=1, max_size=3))
    def submit(self, batch: list[JobSpec]) -> object:
        return self._submit(batch)

    @rule(target=submitted, spec=submitted, change=st.booleans())
    def resubmit(self, spec: JobSpec, change: bool) -> object:
        """A key again: an idempotent replay, or (with another payload) a conflict."""
        return self._submit([attrs.evolve(spec, payload=spec.payload + 10) if change else spec])

    # -- claim and its outcomes -------------------------------------------------------

    @rule(
        worker=st.sampled_from(WORKERS),
        limit=st.integers(1, 3),
        types=st.sampled_from([None, None, ("a",), ("b",), ("a", "b")]),
        lease=st.sampled_from([10, 30]),
        queues=st.sampled_from([None, None, ("q1",), ("default",), ("default", "q1")]),
    )
    def claim(
        self,
        worker: str,
        limit: int,
        types: tuple[str, ...] | None,
        lease: int,
        queues: tuple[str, ...] | None,
    ) -> None:
        def action(repo: JobRepository) -> list[JobRecord]:
            length = timedelta(seconds=lease)
            chosen = queues if self.queues else None
            return claim_from(
                repo,
                worker_id=worker,
                limit=limit,
                lease=length,
                types=types,
                queues=chosen,
                now=self.now,
            )

        expected, actual = self.both(action) or ([], [])
        assert [norm(j) for j in actual] == [norm(j) for j in expected]
        self.held.extend(
            HeldLease(oracle=ref_of(e), subject=ref_of(a))
            for e, a in zip(expected, actual, strict=True)
        )

    def fenced(self, data: st.DataObject, current: bool, act: LeaseAction) -> None:
        """`act` on a few leases in both stores, each store with its own references."""
        held = self.pick_leases(data, current)
        expected = act(self.oracle, [h.oracle for h in held])
        actual = act(self.subject, [h.subject for h in held])
        assert norm_all(actual) == norm_all(expected)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data(), current=CURRENT_MOSTLY, result=RESULTS)
    def complete(self, data: st.DataObject, current: bool, result: str | None) -> None:
        def act(repo: JobRepository, refs: list[LeaseRef]) -> list[JobRecord]:
            if result is None:
                return repo.complete(refs, now=self.now)
            # the first job gets the result, the others none
            return repo.complete(refs, now=self.now, results={refs[0].job_id: result})

        self.fenced(data, current, act)

    @precondition(lambda self: bool(self.held))
    @rule(
        data=st.data(),
        current=CURRENT_MOSTLY,
        delay=st.sampled_from([None, 0, 3, 10]),
        error=st.sampled_from(["boom", "ünïcode ✗"]),
    )
    def fail(self, data: st.DataObject, current: bool, delay: int | None, error: str) -> None:
        retry = timedelta(seconds=delay) if delay is not None else None

        def act(repo: JobRepository, refs: list[LeaseRef]) -> list[JobRecord]:
            failures = [Failure(lease=r, error=error, retry_delay=retry) for r in refs]
            return repo.fail(failures, now=self.now)

        self.fenced(data, current, act)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data(), current=CURRENT_MOSTLY, lease=st.sampled_from([1, 10, 30]))
    def renew(self, data: st.DataObject, current: bool, lease: int) -> None:
        length = timedelta(seconds=lease)
        self.fenced(data, current, lambda repo, refs: repo.renew(refs, lease=length, now=self.now))

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data(), current=CURRENT_MOSTLY)
    def release(self, data: st.DataObject, current: bool) -> None:
        self.fenced(data, current, lambda repo, refs: repo.release(refs, now=self.now))

    @rule(dead=st.lists(st.sampled_from(WORKERS), max_size=2, unique=True))
    def expire(self, dead: list[str]) -> None:
        results = self.both(lambda repo: repo.expire(worker_ids=dead, now=self.now))
        assert results is not None
        assert norm_all(results[1]) == norm_all(results[0])

    # -- management -------------------------------------------------------------------

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data(), current=CURRENT_MOSTLY, delay=st.sampled_from([0, 5, 20]))
    def snooze(self, data: st.DataObject, current: bool, delay: int) -> None:
        def act(repo: JobRepository, refs: list[LeaseRef]) -> list[JobRecord]:
            snoozes = [Snoozed(lease=r, delay=timedelta(seconds=delay)) for r in refs]
            return repo.snooze(snoozes, now=self.now)

        self.fenced(data, current, act)

    @rule(
        action=st.sampled_from(BulkAction),
        status=st.none() | st.sampled_from(Status),
        job_type=st.none() | st.sampled_from(["a", "b"]),
        queue=st.none() | st.sampled_from(["default", "q1"]),
        limit=st.integers(1, 3),
    )
    def bulk(
        self,
        action: BulkAction,
        status: Status | None,
        job_type: str | None,
        queue: str | None,
        limit: int,
    ) -> None:
        queue = queue if self.queues else None  # a store without queues is asked with None
        where = BulkFilter(status=status, type=job_type, queue=queue, touched_before=self.now)
        results = self.both(lambda repo: repo.bulk(action, where, limit=limit, now=self.now))
        if results is not None:
            # seq values may differ between stores (PostgreSQL's have gaps): not last_seq
            expected, actual = results
            assert (actual.changed, actual.skipped, dict(actual.kinds)) == (
                expected.changed,
                expected.skipped,
                dict(expected.kinds),
            )
            assert (actual.last_seq is None) == (expected.last_seq is None)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        # processing too: a cancel request, which renew and the other ends act on
        job_id = self.pick_job(data, frozenset({Status.PENDING, Status.FAILED, Status.PROCESSING}))
        results = self.both(lambda repo: repo.cancel(job_id, now=self.now))
        if results is not None:
            assert norm(results[1]) == norm(results[0])

    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        job_id = self.pick_job(data, frozenset({Status.FAILED, Status.DLQ, Status.CANCELLED}))
        before = {job.id: job for job in all_jobs(self.oracle)}
        results = self.both(lambda repo: repo.retry(job_id, now=self.now))
        if results is not None:
            assert norm(results[1]) == norm(results[0])
        job = before.get(job_id)
        if job is not None and allowed("retry", job.status):
            # refused exactly when another active job of its queue holds its key
            slot = slot_of(job)
            taken = slot is not None and holders(before.values()).get(slot, job.id) != job.id
            assert (results is None) == taken, f"retry of {job_id} ({slot}): {results}"

    @rule(ages=PRUNE_AGES)
    def prune(self, ages: dict[Status, timedelta]) -> None:
        # a limit above the job count: which jobs a smaller one picks among equal
        # finished_at times is the store's choice
        results = self.both(lambda repo: repo.prune(ages, limit=1000, now=self.now))
        assert results is not None
        assert results[1] == results[0]

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        job_id = self.pick_job(data, FINISHED)
        results = self.both(lambda repo: repo.delete(job_id, now=self.now))
        if results is not None:
            assert norm(results[1]) == norm(results[0])

    @rule(data=st.data())
    def get_many(self, data: st.DataObject) -> None:
        wanted = [self.pick_job(data, frozenset(Status)) for _ in range(3)]
        results = self.both(lambda repo: repo.get_many(wanted))
        assert results is not None
        assert norm_all(results[1]) == norm_all(results[0])

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

    @rule(seconds=st.sampled_from([1, 5, 10, 30, 31, 60]), then_expire=st.booleans())
    def advance(self, seconds: int, then_expire: bool) -> None:
        """Time passes (by whole seconds, so lease and run_at boundaries are hit exactly);
        then, as a worker's reaper would, expire what ran out."""
        self.now += timedelta(seconds=seconds)
        if then_expire:
            self.expire([])

    @precondition(lambda self: self.queues)
    @rule(name=st.sampled_from(["default", "q1"]), change=queue_changes)
    def configure_queue(self, name: str, change: QueueChange) -> None:
        results = self.both(lambda repo: queueing(repo).configure_queue(name, change))
        assert results is not None
        assert results[1] == results[0]

    # -- the whole state --------------------------------------------------------------

    @invariant()
    def same_queues(self) -> None:
        if not self.queues:
            return
        results = self.both(lambda repo: queueing(repo).queue_states(now=self.now))
        assert results is not None
        expected, actual = results
        assert [
            (s.settings, nonzero_status(s.counts), s.oldest_due_run_at, s.due_types) for s in actual
        ] == [
            (s.settings, nonzero_status(s.counts), s.oldest_due_run_at, s.due_types)
            for s in expected
        ]

    @invariant()
    def same_jobs_in_same_order(self) -> None:
        results = self.both(lambda repo: repo.find(JobQuery(limit=1000)).jobs)
        assert results is not None
        assert [norm(j) for j in results[1]] == [norm(j) for j in results[0]]
        holders(results[1])  # fails if two active jobs hold one key in one queue

    @invariant()
    def same_stats(self) -> None:
        results = self.both(lambda repo: repo.stats(now=self.now))
        assert results is not None
        expected, actual = results
        assert nonzero(actual.counts) == nonzero(expected.counts)
        assert actual.oldest_due_run_at == expected.oldest_due_run_at

    @invariant()
    def same_summary(self) -> None:
        if not self.subject.capabilities.summary:
            return

        def summary_of(repo: JobRepository) -> QueueSummary:
            # a cap of 2: the model's few jobs reach it, per status and per queue
            return cast(SummaryJobRepository, repo).summary(cap=2, now=self.now)

        results = self.both(summary_of)
        assert results is not None
        expected, actual = results
        assert actual.by_status == expected.by_status
        assert actual.oldest_due_run_at == expected.oldest_due_run_at
        if actual.active_by_queue is not None:  # optional: a store may not count it
            assert expected.active_by_queue is not None
            assert dict(actual.active_by_queue) == dict(expected.active_by_queue)


class ModelContract(StoreFixtures):
    """Random operation sequences agree with the in-memory reference store."""

    model_examples: ClassVar[int] = 50
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
