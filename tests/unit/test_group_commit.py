"""GroupCommit: concurrent single submissions share store calls, and each caller still
gets its own outcome, only after the commit that holds its job."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import pytest

from tests.unit.builders import new_job
from vesper.adapters.clock import SystemClock
from vesper.adapters.memory import InMemoryJobRepository
from vesper.application.group_commit import AsyncGroupCommit, GroupCommit, SubmitResult
from vesper.application.ports import Submitted
from vesper.application.submit import SubmitJob
from vesper.domain.errors import IdempotencyConflict, InvalidRequest, StoreUnavailable
from vesper.domain.query import JobQuery
from vesper.domain.submission import JobRequest, NewJob

THREADS = 24


class CountingRepository(InMemoryJobRepository):
    """The in-memory store, counting its submit calls; each call takes `pause` seconds
    (a commit's latency) so that callers pile up behind the leader."""

    def __init__(self, pause: float = 0.02, refuse: Callable[[NewJob], bool] | None = None):
        super().__init__(SystemClock())
        self.pause = pause
        self.refuse = refuse
        self.calls: list[int] = []
        self.down = False

    def submit(self, jobs: Sequence[NewJob], *, now: datetime | None = None) -> list[Submitted]:
        self.calls.append(len(jobs))
        time.sleep(self.pause)
        if self.down:
            raise StoreUnavailable("the store is down")
        if self.refuse is not None and any(self.refuse(job) for job in jobs):
            raise ValueError("a row the database refuses")
        return super().submit(jobs, now=now)


def _together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released at once; each result, or the exception raised."""
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a caller never got an answer"
    return results


def test_concurrent_submits_share_store_calls_and_each_gets_its_own_job() -> None:
    repo, group = CountingRepository(), GroupCommit()
    jobs = [new_job(payload={"n": n}) for n in range(THREADS)]
    results = _together([lambda job=job: group.submit(repo, job) for job in jobs])
    assert [r.job.id for r in results] == [job.id for job in jobs]
    assert all(r.created for r in results)
    assert [r.job.payload for r in results] == [{"n": n} for n in range(THREADS)]
    assert sum(repo.calls) == THREADS  # every job submitted exactly once
    assert len(repo.calls) < THREADS  # ... and in fewer calls than jobs
    for job in jobs:
        assert repo.get(job.id).payload == job.payload


def test_a_lone_caller_commits_alone_and_the_lead_is_free_afterwards() -> None:
    repo, group = CountingRepository(pause=0), GroupCommit()
    for n in range(3):
        assert group.submit(repo, new_job(payload={"n": n})).created
    assert repo.calls == [1, 1, 1]


def test_batches_hold_at_most_max_batch_jobs() -> None:
    repo, group = CountingRepository(), GroupCommit(max_batch=4)
    _together([lambda n=n: group.submit(repo, new_job(payload={"n": n})) for n in range(THREADS)])
    assert sum(repo.calls) == THREADS
    assert max(repo.calls) <= 4


def test_a_refused_job_fails_alone_and_the_others_are_committed() -> None:
    repo = CountingRepository(refuse=lambda job: job.payload.get("bad") is True)
    group = GroupCommit()
    jobs = [new_job(payload={"n": n, "bad": n == 5}) for n in range(THREADS)]
    results = _together([lambda job=job: group.submit(repo, job) for job in jobs])
    failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    assert failed == [5]
    assert isinstance(results[5], ValueError)
    ok = [r for r in results if not isinstance(r, Exception)]
    assert sorted(r.job.payload["n"] for r in ok) == [n for n in range(THREADS) if n != 5]
    for r in ok:
        assert repo.get(r.job.id).id == r.job.id
    # afterwards the group still works
    assert group.submit(repo, new_job()).created


def test_an_unavailable_store_fails_every_caller_of_the_batch() -> None:
    repo, group = CountingRepository(), GroupCommit()
    repo.down = True
    results = _together(
        [lambda n=n: group.submit(repo, new_job(payload={"n": n})) for n in range(8)]
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
    repo.down = False
    assert group.submit(repo, new_job()).created


def test_concurrent_duplicates_of_a_key_get_the_one_original_job() -> None:
    repo, group = CountingRepository(), GroupCommit()
    request = JobRequest(type="email", payload={"to": "a"}, idempotency_key="k-1")
    same = [new_job(request) for _ in range(8)]
    results = _together([lambda job=job: group.submit(repo, job) for job in same])
    assert len({r.job.id for r in results}) == 1
    assert sum(r.created for r in results) == 1


def test_a_conflicting_key_fails_only_its_own_caller() -> None:
    repo, group = CountingRepository(), GroupCommit()
    first = JobRequest(type="email", payload={"to": "a"}, idempotency_key="k-2")
    other = JobRequest(type="email", payload={"to": "b"}, idempotency_key="k-2")
    calls = [lambda: group.submit(repo, new_job(first))]
    calls += [lambda n=n: group.submit(repo, new_job(payload={"n": n})) for n in range(6)]
    calls += [lambda: group.submit(repo, new_job(other))]
    results = _together(calls)
    conflicts = [r for r in results if isinstance(r, IdempotencyConflict)]
    assert len(conflicts) == 1  # whichever of the two bodies came second
    assert sum(1 for r in results if isinstance(r, Submitted) and r.created) == 7


def test_submit_job_goes_through_the_group() -> None:
    repo, group = CountingRepository(), GroupCommit()
    use_case = SubmitJob(repo, group=group)
    results = _together(
        [lambda n=n: use_case(JobRequest(type="email", payload={"n": n})) for n in range(THREADS)]
    )
    assert all(r.created for r in results)
    assert len(repo.calls) < THREADS


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GroupCommit(max_batch=0)


# AsyncGroupCommit: the same rules for the coroutines of one event loop


async def _in_thread(call: Callable[[], list[SubmitResult]], since: float) -> list[SubmitResult]:
    return await asyncio.to_thread(call)


async def _gather(
    group: AsyncGroupCommit, repo: CountingRepository, jobs: list[NewJob]
) -> list[Any]:
    return await asyncio.gather(*(group.submit(repo, job) for job in jobs), return_exceptions=True)


def test_async_submits_share_store_calls_and_each_gets_its_own_job() -> None:
    repo, group = CountingRepository(), AsyncGroupCommit(_in_thread)
    jobs = [new_job(payload={"n": n}) for n in range(100)]
    results = asyncio.run(_gather(group, repo, jobs))
    assert [r.job.id for r in results] == [job.id for job in jobs]
    assert all(r.created for r in results)
    assert sum(repo.calls) == 100  # every job submitted exactly once
    assert len(repo.calls) <= 2  # the submissions of one loop iteration share a commit
    for job in jobs:
        assert repo.get(job.id).payload == job.payload


def test_async_batches_hold_at_most_max_batch_jobs_and_the_lead_ends() -> None:
    repo, group = CountingRepository(pause=0.005), AsyncGroupCommit(_in_thread, max_batch=7)

    async def scenario() -> tuple[list[Any], Submitted]:
        results = await _gather(group, repo, [new_job(payload={"n": n}) for n in range(50)])
        assert group._leader is None  # nobody waits: no leader task lingers
        return results, await group.submit(repo, new_job())

    results, later = asyncio.run(scenario())
    assert all(isinstance(r, Submitted) for r in results)
    assert later.created
    assert sum(repo.calls) == 51
    assert max(repo.calls) <= 7


def test_async_refused_job_fails_alone_and_the_others_are_committed() -> None:
    repo = CountingRepository(refuse=lambda job: job.payload.get("bad") is True)
    group = AsyncGroupCommit(_in_thread)
    jobs = [new_job(payload={"n": n, "bad": n == 5}) for n in range(20)]
    results = asyncio.run(_gather(group, repo, jobs))
    assert [i for i, r in enumerate(results) if isinstance(r, Exception)] == [5]
    assert isinstance(results[5], ValueError)
    for r in results[:5] + results[6:]:
        assert repo.get(r.job.id).payload == r.job.payload


def test_async_unavailable_store_or_gate_fails_the_whole_batch() -> None:
    repo, group = CountingRepository(), AsyncGroupCommit(_in_thread)
    repo.down = True
    results = asyncio.run(_gather(group, repo, [new_job(payload={"n": n}) for n in range(8)]))
    assert all(isinstance(r, StoreUnavailable) for r in results)

    async def gate_full(call: Callable[[], list[SubmitResult]], since: float) -> list[SubmitResult]:
        raise StoreUnavailable("all connections stayed busy")

    repo.down, calls_before = False, len(repo.calls)
    closed = AsyncGroupCommit(gate_full)
    results = asyncio.run(_gather(closed, repo, [new_job() for _ in range(4)]))
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert len(repo.calls) == calls_before  # nothing reached the store


def test_async_duplicates_of_a_key_get_the_one_original_job() -> None:
    repo, group = CountingRepository(), AsyncGroupCommit(_in_thread)
    request = JobRequest(type="email", payload={"to": "a"}, idempotency_key="k-1")
    results = asyncio.run(_gather(group, repo, [new_job(request) for _ in range(8)]))
    assert len({r.job.id for r in results}) == 1
    assert sum(r.created for r in results) == 1


def test_a_cancelled_waiter_leaves_the_others_answered() -> None:
    repo, group = CountingRepository(pause=0.05), AsyncGroupCommit(_in_thread)

    async def scenario() -> tuple[list[Any], bool]:
        first = asyncio.ensure_future(group.submit(repo, new_job(payload={"n": -1})))
        await asyncio.sleep(0.01)  # the first commit is in flight; these queue behind it
        waiters = [
            asyncio.ensure_future(group.submit(repo, new_job(payload={"n": n}))) for n in range(6)
        ]
        await asyncio.sleep(0)
        waiters[2].cancel()  # a request past its write timeout
        results = await asyncio.gather(first, *waiters, return_exceptions=True)
        return results, group._leader is None

    results, lead_ended = asyncio.run(scenario())
    assert isinstance(results[3], asyncio.CancelledError)
    answered = [r for i, r in enumerate(results) if i != 3]
    assert all(isinstance(r, Submitted) and r.created for r in answered)
    assert lead_ended
    # the cancelled request's job had not reached a commit: it was dropped, not stored
    assert sum(repo.calls) == 6
    assert sorted(job.payload["n"] for job in repo.find(JobQuery(limit=100)).jobs) == [
        -1,
        0,
        1,
        3,
        4,
        5,
    ]


def test_a_new_loop_is_served_after_the_old_one_closed_mid_commit() -> None:
    repo = CountingRepository(pause=0)
    stuck = threading.Event()

    async def run(call: Callable[[], list[SubmitResult]], since: float) -> list[SubmitResult]:
        if not stuck.is_set():
            stuck.set()
            await asyncio.sleep(3600)  # the old loop closes during this commit
        return await asyncio.to_thread(call)

    group = AsyncGroupCommit(run)
    old = asyncio.new_event_loop()
    waiting = old.create_task(group.submit(repo, new_job()))
    old.run_until_complete(asyncio.sleep(0.05))
    assert not waiting.done()
    old.close()  # without cancelling its tasks: the leader never ends
    later = asyncio.run(asyncio.wait_for(group.submit(repo, new_job(payload={"n": 1})), 10))
    assert later.created
    assert repo.calls == [1]


def test_a_batch_waits_for_the_store_from_when_its_oldest_job_began_to_wait() -> None:
    # a request that joined while the commit before its own ran has used part of its
    # wait: the gate must bound its batch from its arrival, not from the batch's start
    repo, seen = CountingRepository(pause=0.1), []

    async def run(call: Callable[[], list[SubmitResult]], since: float) -> list[SubmitResult]:
        seen.append(since)
        return await asyncio.to_thread(call)

    group = AsyncGroupCommit(run)

    async def scenario() -> tuple[float, float, float]:
        before_first = time.monotonic()
        first = asyncio.ensure_future(group.submit(repo, new_job()))
        await asyncio.sleep(0.03)  # the first commit is in flight
        before_later = time.monotonic()
        later = [asyncio.ensure_future(group.submit(repo, new_job())) for _ in range(3)]
        await asyncio.sleep(0)  # each has joined the queue
        after_later = time.monotonic()
        await asyncio.gather(first, *later)
        return before_first, before_later, after_later

    before_first, before_later, after_later = asyncio.run(scenario())
    assert repo.calls == [1, 3]
    assert before_first <= seen[0] <= before_later
    assert before_later <= seen[1] <= after_later


def test_submit_job_in_group_validates_then_joins_the_commit() -> None:
    repo = CountingRepository()
    use_case, group = SubmitJob(repo), AsyncGroupCommit(_in_thread)

    async def scenario() -> list[Any]:
        requests = [JobRequest(type="email", payload={"n": n}) for n in range(30)]
        requests.append(JobRequest(type="email", priority=11))
        return await asyncio.gather(
            *(use_case.in_group(r, group) for r in requests), return_exceptions=True
        )

    results = asyncio.run(scenario())
    assert all(isinstance(r, Submitted) and r.created for r in results[:30])
    assert isinstance(results[30], InvalidRequest)
    assert results[30].field == "priority"
    assert sum(repo.calls) == 30
    assert len(repo.calls) < 30


def test_async_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AsyncGroupCommit(_in_thread, max_batch=0)
