"""GroupCommit: concurrent submissions share store calls, and each caller still gets its
own outcome, only after the commit that holds its jobs; from threads (`submit`, through
the CoalescingJobRepository around the store) and from coroutines (`submit_async`)."""

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
from vesper.application.group_commit import CoalescingJobRepository, GroupCommit
from vesper.application.ports import Submitted
from vesper.application.store_gate import StoreGate
from vesper.application.submit import SubmitJob, SubmitJobs, SubmitSteps
from vesper.domain.errors import IdempotencyConflict, InvalidRequest, StoreUnavailable
from vesper.domain.query import JobQuery
from vesper.domain.submission import JobRequest, NewJob

THREADS = 24


def _group(max_batch: int = 1000, capacity: int | None = 4, wait: float = 10.0) -> GroupCommit:
    return GroupCommit(StoreGate(capacity, wait=wait), max_batch=max_batch)


def _one(group: GroupCommit, repo: CountingRepository, job: NewJob) -> Submitted:
    (submitted,) = group.submit(repo, [job])
    return submitted


def _steps(job: NewJob) -> SubmitSteps[Submitted]:
    """A coroutine's submission of a job already prepared."""
    submitted = yield [job]
    return submitted[0]


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
    repo, group = CountingRepository(), _group()
    jobs = [new_job(payload={"n": n}) for n in range(THREADS)]
    results = _together([lambda job=job: _one(group, repo, job) for job in jobs])
    assert [r.job.id for r in results] == [job.id for job in jobs]
    assert all(r.created for r in results)
    assert [r.job.payload for r in results] == [{"n": n} for n in range(THREADS)]
    assert sum(repo.calls) == THREADS  # every job submitted exactly once
    assert len(repo.calls) < THREADS  # ... and in fewer calls than jobs
    for job in jobs:
        assert repo.get(job.id).payload == job.payload


def test_a_lone_caller_commits_alone_and_the_lead_is_free_afterwards() -> None:
    repo, group = CountingRepository(pause=0), _group()
    for n in range(3):
        assert _one(group, repo, new_job(payload={"n": n})).created
    assert repo.calls == [1, 1, 1]


def test_batches_hold_at_most_max_batch_jobs() -> None:
    repo, group = CountingRepository(), _group(max_batch=4)
    _together([lambda n=n: _one(group, repo, new_job(payload={"n": n})) for n in range(THREADS)])
    assert sum(repo.calls) == THREADS
    assert max(repo.calls) <= 4


def test_a_refused_job_fails_alone_and_the_others_are_committed() -> None:
    repo = CountingRepository(refuse=lambda job: job.payload.get("bad") is True)
    group = _group()
    jobs = [new_job(payload={"n": n, "bad": n == 5}) for n in range(THREADS)]
    results = _together([lambda job=job: _one(group, repo, job) for job in jobs])
    failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    assert failed == [5]
    assert isinstance(results[5], ValueError)
    ok = [r for r in results if not isinstance(r, Exception)]
    assert sorted(r.job.payload["n"] for r in ok) == [n for n in range(THREADS) if n != 5]
    for r in ok:
        assert repo.get(r.job.id).id == r.job.id
    # afterwards the group still works
    assert _one(group, repo, new_job()).created


def test_an_unavailable_store_fails_every_caller_of_the_batch() -> None:
    repo, group = CountingRepository(), _group()
    repo.down = True
    results = _together(
        [lambda n=n: _one(group, repo, new_job(payload={"n": n})) for n in range(8)]
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
    repo.down = False
    assert _one(group, repo, new_job()).created


def test_concurrent_duplicates_of_a_key_get_the_one_original_job() -> None:
    repo, group = CountingRepository(), _group()
    request = JobRequest(type="email", payload={"to": "a"}, idempotency_key="k-1")
    same = [new_job(request) for _ in range(8)]
    results = _together([lambda job=job: _one(group, repo, job) for job in same])
    assert len({r.job.id for r in results}) == 1
    assert sum(r.created for r in results) == 1


def test_a_conflicting_key_fails_only_its_own_caller() -> None:
    repo, group = CountingRepository(), _group()
    first = JobRequest(type="email", payload={"to": "a"}, idempotency_key="k-2")
    other = JobRequest(type="email", payload={"to": "b"}, idempotency_key="k-2")
    calls = [lambda: _one(group, repo, new_job(first))]
    calls += [lambda n=n: _one(group, repo, new_job(payload={"n": n})) for n in range(6)]
    calls += [lambda: _one(group, repo, new_job(other))]
    results = _together(calls)
    conflicts = [r for r in results if isinstance(r, IdempotencyConflict)]
    assert len(conflicts) == 1  # whichever of the two bodies came second
    assert sum(1 for r in results if isinstance(r, Submitted) and r.created) == 7


def test_submit_job_goes_through_the_group() -> None:
    repo, group = CountingRepository(), _group()
    use_case = SubmitJob(CoalescingJobRepository(repo, group))
    results = _together(
        [lambda n=n: use_case(JobRequest(type="email", payload={"n": n})) for n in range(THREADS)]
    )
    assert all(r.created for r in results)
    assert len(repo.calls) < THREADS


def test_a_batch_of_one_caller_stays_all_or_nothing_when_it_shares_a_commit() -> None:
    repo = CountingRepository(refuse=lambda job: job.payload.get("bad") is True)
    group = _group()
    jobs = CoalescingJobRepository(repo, group)
    use_case = SubmitJobs(jobs)
    good = [JobRequest(type="a", payload={"n": n}) for n in range(3)]
    bad = [JobRequest(type="a", payload={"n": 9}), JobRequest(type="a", payload={"bad": True})]
    calls: list[Callable[[], Any]] = [lambda: use_case(bad)]
    calls += [lambda n=n: use_case([JobRequest(type="b", payload={"n": n})]) for n in range(8)]
    calls += [lambda: use_case(good)]
    results = _together(calls)
    assert isinstance(results[0], ValueError)
    assert all(len(r) == 1 and r[0].created for r in results[1:9])
    assert [r.job.payload for r in results[9]] == [{"n": n} for n in range(3)]
    stored = {tuple(sorted(job.payload.items())) for job in repo.find(JobQuery(limit=100)).jobs}
    assert (("n", 9),) not in stored  # nothing of the refused batch was kept


def test_the_lead_waits_for_a_store_slot_no_longer_than_the_gates_wait() -> None:
    gate = StoreGate(1, wait=0.2)
    group, repo = GroupCommit(gate), CountingRepository(pause=0)
    release = threading.Event()
    holder = threading.Thread(target=gate.call, args=(lambda: release.wait(10),))
    holder.start()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="stayed busy"):
            _one(group, repo, new_job())
        assert time.monotonic() - started < 2
    finally:
        release.set()
        holder.join(5)
    assert _one(group, repo, new_job()).created  # the lead was dropped, and is taken again
    assert repo.calls == [1]


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        _group(max_batch=0)


# submit_async: the same rules for the coroutines of an event loop


async def _gather(group: GroupCommit, repo: CountingRepository, jobs: list[NewJob]) -> list[Any]:
    return await asyncio.gather(
        *(group.submit_async(repo, _steps(job)) for job in jobs), return_exceptions=True
    )


def test_async_submits_share_store_calls_and_each_gets_its_own_job() -> None:
    repo, group = CountingRepository(), _group()
    jobs = [new_job(payload={"n": n}) for n in range(100)]
    results = asyncio.run(_gather(group, repo, jobs))
    assert [r.job.id for r in results] == [job.id for job in jobs]
    assert all(r.created for r in results)
    assert sum(repo.calls) == 100  # every job submitted exactly once
    assert len(repo.calls) <= 2  # the submissions of one loop iteration share a commit
    for job in jobs:
        assert repo.get(job.id).payload == job.payload


def test_async_batches_hold_at_most_max_batch_jobs_and_the_lead_ends() -> None:
    repo, group = CountingRepository(pause=0.005), _group(max_batch=7)

    async def scenario() -> tuple[list[Any], Submitted]:
        results = await _gather(group, repo, [new_job(payload={"n": n}) for n in range(50)])
        assert group._leader is None  # nobody waits: nobody leads
        return results, await group.submit_async(repo, _steps(new_job()))

    results, later = asyncio.run(scenario())
    assert all(isinstance(r, Submitted) for r in results)
    assert later.created
    assert sum(repo.calls) == 51
    assert max(repo.calls) <= 7


def test_async_refused_job_fails_alone_and_the_others_are_committed() -> None:
    repo = CountingRepository(refuse=lambda job: job.payload.get("bad") is True)
    group = _group()
    jobs = [new_job(payload={"n": n, "bad": n == 5}) for n in range(20)]
    results = asyncio.run(_gather(group, repo, jobs))
    assert [i for i, r in enumerate(results) if isinstance(r, Exception)] == [5]
    assert isinstance(results[5], ValueError)
    for r in results[:5] + results[6:]:
        assert repo.get(r.job.id).payload == r.job.payload


def test_async_unavailable_store_or_gate_fails_the_whole_batch() -> None:
    repo, group = CountingRepository(), _group()
    repo.down = True
    results = asyncio.run(_gather(group, repo, [new_job(payload={"n": n}) for n in range(8)]))
    assert all(isinstance(r, StoreUnavailable) for r in results)

    repo.down, calls_before = False, len(repo.calls)
    gate = StoreGate(1, wait=0.1)
    closed = GroupCommit(gate)
    release = threading.Event()
    holder = threading.Thread(target=gate.call, args=(lambda: release.wait(10),))
    holder.start()  # every slot stays busy
    try:
        results = asyncio.run(_gather(closed, repo, [new_job() for _ in range(4)]))
    finally:
        release.set()
        holder.join(5)
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert len(repo.calls) == calls_before  # nothing reached the store


def test_async_duplicates_of_a_key_get_the_one_original_job() -> None:
    repo, group = CountingRepository(), _group()
    request = JobRequest(type="email", payload={"to": "a"}, idempotency_key="k-1")
    results = asyncio.run(_gather(group, repo, [new_job(request) for _ in range(8)]))
    assert len({r.job.id for r in results}) == 1
    assert sum(r.created for r in results) == 1


def test_a_cancelled_waiter_leaves_the_others_answered() -> None:
    repo, group = CountingRepository(pause=0.05), _group()

    async def scenario() -> tuple[list[Any], bool]:
        first = asyncio.ensure_future(group.submit_async(repo, _steps(new_job(payload={"n": -1}))))
        await asyncio.sleep(0.01)  # the first commit is in flight; these queue behind it
        waiters = [
            asyncio.ensure_future(group.submit_async(repo, _steps(new_job(payload={"n": n}))))
            for n in range(6)
        ]
        await asyncio.sleep(0)
        waiters[2].cancel()  # a request past its write timeout
        results = await asyncio.gather(first, *waiters, return_exceptions=True)
        await asyncio.sleep(0.05)  # the lead's thread returns its slot
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


def test_a_new_loop_is_served_after_the_old_one_closed_while_its_lead_waited() -> None:
    repo = CountingRepository(pause=0)
    gate = StoreGate(1)
    group = GroupCommit(gate)
    release = threading.Event()
    holder = threading.Thread(target=gate.call, args=(lambda: release.wait(10),))
    holder.start()  # the old loop's lead waits for this slot
    old = asyncio.new_event_loop()
    waiting = old.create_task(group.submit_async(repo, _steps(new_job())))
    old.run_until_complete(asyncio.sleep(0.05))
    assert not waiting.done()
    old.close()  # without cancelling its tasks: that lead never starts
    release.set()
    holder.join(5)
    later = asyncio.run(
        asyncio.wait_for(group.submit_async(repo, _steps(new_job(payload={"n": 1}))), 10)
    )
    assert later.created
    # a thread after it is served too
    assert _one(group, repo, new_job(payload={"n": 2})).created


def test_a_submission_waits_for_the_store_from_when_it_began_to_wait() -> None:
    # a submission that joined while the lead waited for a slot has used part of its
    # wait: it gets StoreUnavailable when its own wait ends, not a full wait later
    gate = StoreGate(1, wait=0.3)
    repo, group = CountingRepository(pause=0), GroupCommit(gate)
    release = threading.Event()
    holder = threading.Thread(target=gate.call, args=(lambda: release.wait(10),))
    holder.start()

    async def scenario() -> tuple[list[Any], list[float]]:
        started = time.monotonic()
        first = asyncio.ensure_future(group.submit_async(repo, _steps(new_job())))
        await asyncio.sleep(0.15)
        later = asyncio.ensure_future(group.submit_async(repo, _steps(new_job())))
        ended = []
        for waiting in (first, later):
            with pytest.raises(StoreUnavailable):
                await waiting
            ended.append(time.monotonic() - started)
        return [first, later], ended

    try:
        _, ended = asyncio.run(scenario())
    finally:
        release.set()
        holder.join(5)
    assert 0.25 < ended[0] < 0.5  # the first: its own 0.3 s
    assert 0.4 < ended[1] < 0.7  # the later one: 0.15 + 0.3 s, not 0.3 + 0.3 s
    assert repo.calls == []


def test_submit_job_steps_validate_in_the_lead_and_join_the_commit() -> None:
    repo = CountingRepository()
    use_case, group = SubmitJob(repo), _group()

    async def scenario() -> list[Any]:
        requests = [JobRequest(type="email", payload={"n": n}) for n in range(30)]
        requests.append(JobRequest(type="email", priority=11))
        return await asyncio.gather(
            *(group.submit_async(repo, use_case.steps(r)) for r in requests),
            return_exceptions=True,
        )

    results = asyncio.run(scenario())
    assert all(isinstance(r, Submitted) and r.created for r in results[:30])
    assert isinstance(results[30], InvalidRequest)
    assert results[30].field == "priority"
    assert sum(repo.calls) == 30
    assert len(repo.calls) < 30


def test_threads_and_coroutines_share_the_queue() -> None:
    repo, group = CountingRepository(pause=0.02), _group()

    async def scenario() -> list[Any]:
        return await asyncio.gather(
            *(group.submit_async(repo, _steps(new_job(payload={"n": n}))) for n in range(20)),
            return_exceptions=True,
        )

    threads = [lambda n=n: _one(group, repo, new_job(payload={"t": n})) for n in range(THREADS)]
    from_threads: list[Any] = []
    runner = threading.Thread(target=lambda: from_threads.extend(_together(threads)))
    runner.start()
    from_loop = asyncio.run(scenario())
    runner.join(30)
    assert all(isinstance(r, Submitted) and r.created for r in from_loop + from_threads)
    assert sum(repo.calls) == 20 + THREADS
    assert len(repo.calls) < 20 + THREADS


@pytest.mark.timeout(30)
def test_a_sync_submission_on_a_loops_thread_commits_alone() -> None:
    # an async consumer calling app.enqueue blocks its loop: waiting there for a lead
    # that needs this very loop would wait forever
    repo, group = CountingRepository(pause=0.05), _group()

    async def scenario() -> tuple[Submitted, Submitted]:
        waiting = asyncio.ensure_future(group.submit_async(repo, _steps(new_job())))
        await asyncio.sleep(0)  # the coroutine's lead starts on this loop
        (alone,) = group.submit(repo, [new_job(payload={"alone": True})])
        return alone, await waiting

    alone, other = asyncio.run(scenario())
    assert alone.created
    assert other.created
    assert repo.calls == [1, 1]


@pytest.mark.timeout(30)
def test_a_thread_takes_over_a_lead_whose_loop_stopped_before_it_started() -> None:
    repo = CountingRepository(pause=0)
    gate = StoreGate(1)
    group = GroupCommit(gate)
    release = threading.Event()
    holder = threading.Thread(target=gate.call, args=(lambda: release.wait(10),))
    holder.start()  # the loop's lead waits for this slot
    old = asyncio.new_event_loop()
    waiting = old.create_task(group.submit_async(repo, _steps(new_job())))
    old.run_until_complete(asyncio.sleep(0.05))
    old.close()  # without cancelling its tasks: that lead never starts
    release.set()
    holder.join(5)
    assert _one(group, repo, new_job(payload={"n": 1})).created
    assert group._leader is None
    assert not waiting.done()  # its loop is gone: nobody will answer it
