"""InMemoryJobRepository specifics: its two claim heaps, lazily invalidated entries.

The contract suite (tests/contract) holds every store to the port's docstrings; these
tests aim at what only this implementation can get wrong: heap entries that go stale as
jobs change status and run_at, checked against a plain sorted() over claim_order.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from vesper.adapters.clock import FixedClock
from vesper.adapters.memory import InMemoryJobRepository
from vesper.domain.errors import IllegalTransition
from vesper.domain.job import Failure, JobId, JobRecord, LeaseRef
from vesper.domain.ordering import claim_order
from vesper.domain.query import JobQuery
from vesper.domain.states import Status

from .builders import T0, new_job, seconds

LEASE = timedelta(seconds=8)
TYPES = ("a", "b")


def expected_claim(jobs: list[JobRecord], now: datetime, types: list[str] | None) -> list[JobId]:
    """The claim order, restated without the store: sorted() over the due jobs."""
    due = [
        j
        for j in jobs
        if j.status in {Status.PENDING, Status.FAILED}
        and j.run_at <= now
        and (types is None or j.type in types)
    ]
    return [j.id for j in sorted(due, key=claim_order)]


def ref_of(job: JobRecord) -> LeaseRef:
    assert job.lease is not None
    return LeaseRef(job_id=job.id, token=job.lease.token)


SPECS = st.lists(
    st.tuples(st.integers(0, 10), st.integers(-3, 3), st.sampled_from(TYPES)),
    min_size=1,
    max_size=40,
)


@given(specs=SPECS, limits=st.lists(st.integers(1, 7), min_size=1, max_size=8))
def test_claims_follow_sorted_claim_order(
    specs: list[tuple[int, int, str]], limits: list[int]
) -> None:
    repo = InMemoryJobRepository(FixedClock(T0))
    repo.submit([new_job(type=t, priority=p, run_at=T0 + seconds(s)) for p, s, t in specs], now=T0)
    now = T0 + seconds(1)  # some jobs are not due yet
    expected = expected_claim(_all(repo), now, None)
    claimed: list[JobId] = []
    for limit in limits:
        batch = repo.claim(worker_id="w", limit=limit, lease=LEASE, now=now)
        assert len(batch) == min(limit, len(expected) - len(claimed))
        claimed.extend(j.id for j in batch)
    assert claimed == expected[: len(claimed)]


@given(specs=SPECS, types=st.sampled_from([["a"], ["b"], ["a", "b"], []]))
def test_claims_by_type_skip_others_without_losing_them(
    specs: list[tuple[int, int, str]], types: list[str]
) -> None:
    repo = InMemoryJobRepository(FixedClock(T0))
    repo.submit([new_job(type=t, priority=p, run_at=T0 + seconds(s)) for p, s, t in specs])
    now = T0 + seconds(3)
    jobs = _all(repo)
    typed = repo.claim(worker_id="w", limit=100, lease=LEASE, types=types, now=now)
    assert [j.id for j in typed] == expected_claim(jobs, now, types)
    rest = repo.claim(worker_id="w", limit=100, lease=LEASE, now=now)
    remaining = [j for j in jobs if j.id not in {t.id for t in typed}]
    assert [j.id for j in rest] == expected_claim(remaining, now, None)


def test_claim_order_survives_many_status_changes() -> None:
    clock = FixedClock(T0)
    repo = InMemoryJobRepository(clock)
    repo.submit([new_job(priority=i % 4, run_at=T0 - seconds(i % 5)) for i in range(200)])
    jobs = _all(repo)
    # a claim that takes nothing still moves every due job into the ready heap, so the
    # changes below leave stale entries there
    assert repo.claim(worker_id="w", limit=10, lease=LEASE, types=["nobody"]) == []
    for job in jobs[::2]:
        repo.cancel(job.id)
    for job in jobs[::4]:
        repo.retry(job.id)  # due now, behind its old place in the FIFO
    clock.advance(seconds(1))
    first = repo.claim(worker_id="w", limit=30, lease=LEASE)
    repo.release([ref_of(j) for j in first[::3]])  # back to pending, old run_at
    repo.fail([Failure(lease=ref_of(j), error="x", retry_delay=seconds(2)) for j in first[1::3]])
    clock.advance(seconds(2))
    expected = expected_claim(_all(repo), clock.now(), None)
    claimed = repo.claim(worker_id="w", limit=1000, lease=LEASE)
    assert [j.id for j in claimed] == expected
    assert repo.claim(worker_id="w", limit=1000, lease=LEASE) == []


def test_a_job_is_claimed_once_however_many_stale_entries_it_left() -> None:
    clock = FixedClock(T0)
    repo = InMemoryJobRepository(clock)
    [submitted] = repo.submit([new_job()])
    job = submitted.job
    for _ in range(5):  # each pass pushes a fresh heap entry with the same run_at
        [claimed] = repo.claim(worker_id="w", limit=10, lease=LEASE)
        repo.release([ref_of(claimed)])
        repo.cancel(job.id)
        repo.retry(job.id, now=job.run_at)
    assert [j.id for j in repo.claim(worker_id="w", limit=10, lease=LEASE)] == [job.id]
    assert repo.claim(worker_id="w", limit=10, lease=LEASE) == []


def test_claim_at_an_earlier_now_takes_only_jobs_due_by_then() -> None:
    repo = InMemoryJobRepository(FixedClock(T0))
    repo.submit([new_job(run_at=T0 + seconds(5)) for _ in range(2)])
    assert len(repo.claim(worker_id="w", limit=1, lease=LEASE, now=T0 + seconds(10))) == 1
    assert repo.claim(worker_id="w", limit=1, lease=LEASE, now=T0) == []


@given(
    specs=st.lists(st.tuples(st.sampled_from(TYPES), st.integers(0, 2)), min_size=0, max_size=25),
    limit=st.integers(1, 6),
    type_filter=st.sampled_from([None, "a"]),
    priority_filter=st.sampled_from([None, 1]),
)
def test_paging_through_find_visits_each_match_once_newest_first(
    specs: list[tuple[str, int]], limit: int, type_filter: str | None, priority_filter: int | None
) -> None:
    repo = InMemoryJobRepository(FixedClock(T0))
    if specs:
        repo.submit([new_job(type=t, priority=p) for t, p in specs])
    expected = [
        j.id
        for j in reversed(_all(repo))
        if (type_filter is None or j.type == type_filter)
        and (priority_filter is None or j.priority == priority_filter)
    ]
    seen: list[JobId] = []
    cursor: str | None = None
    for _ in range(len(specs) + 2):
        page = repo.find(
            JobQuery(type=type_filter, priority=priority_filter, limit=limit, cursor=cursor)
        )
        assert len(page.jobs) <= limit
        seen.extend(j.id for j in page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert cursor is None
    assert seen == expected


def _all(repo: InMemoryJobRepository) -> list[JobRecord]:
    """Every job, oldest first (find pages newest first)."""
    return list(reversed(repo.find(JobQuery(limit=1000)).jobs))


class MemoryRepositoryMachine(RuleBasedStateMachine):
    """Random submits, claims and outcomes; every claim must equal sorted(claim_order)."""

    @initialize()
    def start(self) -> None:
        self.clock = FixedClock(T0)
        self.repo = InMemoryJobRepository(self.clock)
        self.ids: list[JobId] = []

    def jobs(self) -> list[JobRecord]:
        return [self.repo.get(i) for i in self.ids]

    def processing(self) -> list[JobRecord]:
        return [j for j in self.jobs() if j.status is Status.PROCESSING]

    def pick_processing(self, pick: int) -> JobRecord:
        running = self.processing()
        return running[pick % len(running)]

    @rule(
        specs=st.lists(
            st.tuples(
                st.integers(0, 3), st.integers(0, 4), st.sampled_from(TYPES), st.integers(0, 2)
            ),
            min_size=1,
            max_size=3,
        )
    )
    def submit(self, specs: list[tuple[int, int, str, int]]) -> None:
        submitted = self.repo.submit(
            [new_job(type=t, priority=p, delay=seconds(d), max_retries=r) for p, d, t, r in specs]
        )
        self.ids.extend(s.job.id for s in submitted)

    @rule(
        limit=st.integers(1, 4),
        types=st.sampled_from([None, ["a"], ["b"], ["a", "b"]]),
        worker=st.sampled_from(["w1", "w2"]),
    )
    def claim(self, limit: int, types: list[str] | None, worker: str) -> None:
        before = {j.id: j for j in self.jobs()}
        now = self.clock.now()
        expected = expected_claim(list(before.values()), now, types)[:limit]
        claimed = self.repo.claim(worker_id=worker, limit=limit, lease=LEASE, types=types)
        assert [j.id for j in claimed] == expected
        for job in claimed:
            assert job.status is Status.PROCESSING
            assert job.worker_id == worker
            assert job.lease_expires_at == now + LEASE
            assert job.attempts == before[job.id].attempts + 1
            assert self.repo.get(job.id) == job

    @precondition(lambda self: self.processing())
    @rule(pick=st.integers(0, 100), outcome=st.sampled_from(["complete", "fail", "dlq", "release"]))
    def finish(self, pick: int, outcome: str) -> None:
        job = self.pick_processing(pick)
        ref = ref_of(job)
        live = job.lease_expires_at is not None and self.clock.now() < job.lease_expires_at
        if outcome == "complete":
            changed = self.repo.complete([ref])
        elif outcome == "release":
            changed = self.repo.release([ref])
        else:
            delay = None if outcome == "dlq" else seconds(job.attempts % 3)
            changed = self.repo.fail([Failure(lease=ref, error="e", retry_delay=delay)])
        assert len(changed) == (1 if live else 0)
        assert self.repo.get(job.id) == (changed[0] if live else job)

    @rule()
    def expire(self) -> None:
        now = self.clock.now()
        due = {
            j.id
            for j in self.processing()
            if j.lease_expires_at is not None and j.lease_expires_at <= now
        }
        ended = self.repo.expire()
        assert {j.id for j in ended} == due
        # cancelled: the job had a cancel request (manage's cancel of a processing job)
        assert all(j.status in {Status.FAILED, Status.DLQ, Status.CANCELLED} for j in ended)

    @precondition(lambda self: self.ids)
    @rule(pick=st.integers(0, 100), action=st.sampled_from(["cancel", "retry"]))
    def manage(self, pick: int, action: str) -> None:
        job_id = self.ids[pick % len(self.ids)]
        before = self.repo.get(job_id)
        try:
            after = getattr(self.repo, action)(job_id)
        except IllegalTransition:
            assert self.repo.get(job_id) == before
        else:
            assert self.repo.get(job_id) == after

    @precondition(lambda self: self.ids)
    @rule(pick=st.integers(0, 100))
    def requeue(self, pick: int) -> None:
        """Cancel and retry at once: the job's run_at moves to now, its heap entry goes stale."""
        job = self.repo.get(self.ids[pick % len(self.ids)])
        if job.status in {Status.PENDING, Status.FAILED}:
            self.repo.cancel(job.id)
        if self.repo.get(job.id).status in {Status.CANCELLED, Status.DLQ, Status.FAILED}:
            retried = self.repo.retry(job.id)
            assert (retried.status, retried.run_at) == (Status.PENDING, self.clock.now())

    @rule(step=st.integers(0, 6))
    def tick(self, step: int) -> None:
        self.clock.advance(seconds(step))

    @invariant()
    def stats_agree_with_the_jobs(self) -> None:
        jobs = self.jobs()
        stats = self.repo.stats()
        assert stats.total == len(jobs)
        for status in Status:
            assert stats.by_status[status] == sum(j.status is status for j in jobs)
        due = [j.run_at for j in jobs if j.is_due(self.clock.now())]
        assert stats.oldest_due_run_at == (min(due) if due else None)
        assert all((j.lease is not None) == (j.status is Status.PROCESSING) for j in jobs)


TestMemoryRepositoryMachine = MemoryRepositoryMachine.TestCase
