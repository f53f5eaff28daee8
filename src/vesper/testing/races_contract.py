"""Concurrent callers: claims never shared, one job per idempotency key, one outcome per
lease. Threads share a few store handles; stores with `capabilities.multi_process` are
also raced by OS processes, each with its own handle on the same database."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime, timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import TypeVar

import pytest

from vesper.application.ports import JobRepository, Submitted
from vesper.domain.errors import IdempotencyConflict
from vesper.domain.job import JobId, JobRecord
from vesper.domain.states import Status
from vesper.testing.fixtures import (
    T0,
    StoreFixtures,
    StoreOpener,
    all_jobs,
    at,
    claim,
    failure,
    ids,
    new_job,
    ref,
    submit,
)

PROCESS_JOBS = 2000
PROCESSES = 4
THREADS = 8
HOUR = timedelta(hours=1)
LOST_LOCK_ROUNDS = 200  # per action; see the lost-row-lock race below
T = TypeVar("T")

Outcome = tuple[str, list[str], str | None]  # worker id, the job ids it claimed, an error


def together(
    handles: Sequence[JobRepository], callers: int, call: Callable[[int, JobRepository], T]
) -> list[T]:
    """Run `call(i, handle)` in `callers` threads released at once; the results in order."""
    start = threading.Barrier(callers)

    def run(i: int) -> T:
        start.wait(timeout=30)
        return call(i, handles[i % len(handles)])

    with ThreadPoolExecutor(max_workers=callers) as pool:
        return list(pool.map(run, range(callers)))


class RaceContract(StoreFixtures):
    def test_claim_concurrent_threads_never_share_a_job(self, store_opener: StoreOpener) -> None:
        with ExitStack() as stack:
            handles = [stack.enter_context(store_opener()).jobs for _ in range(2)]
            created = submit(handles[0], *(new_job() for _ in range(400)), now=T0)

            def claim_all(i: int, repo: JobRepository) -> list[JobId]:
                rng = random.Random(i)
                mine: list[JobId] = []
                while batch := claim(repo, now=at(1), worker_id=f"w{i}", limit=rng.randint(1, 5)):
                    mine.extend(ids(batch))
                return mine

            claimed = [i for mine in together(handles, THREADS, claim_all) for i in mine]
            claimed.extend(ids(claim(handles[0], now=at(1), worker_id="sweeper", limit=1000)))
            assert sorted(claimed) == sorted(ids(created))  # each exactly once
            stored = all_jobs(handles[0])
            assert all(j.status is Status.PROCESSING and j.attempts == 1 for j in stored)

    def test_claim_concurrent_processes_never_share_a_job(
        self, jobs: JobRepository, store_opener: StoreOpener
    ) -> None:
        if not jobs.capabilities.multi_process:
            pytest.skip("the store does not support several processes (multi_process=False)")
        created: list[JobId] = []
        for start in range(0, PROCESS_JOBS, 500):
            batch = [new_job(priority=i % 3) for i in range(start, start + 500)]
            created.extend(ids(submit(jobs, *batch, now=T0)))
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(PROCESSES)
        results: Queue[Outcome] = ctx.Queue()
        children = [
            ctx.Process(
                target=claim_until_empty,
                args=(store_opener, f"proc{n}", at(1), barrier, results),
                daemon=True,
            )
            for n in range(PROCESSES)
        ]
        for child in children:
            child.start()
        try:
            outcomes = [results.get(timeout=180) for _ in children]
        finally:
            for child in children:
                child.join(timeout=30)
                if child.is_alive():
                    child.kill()
        errors = [error for _, _, error in outcomes if error is not None]
        assert not errors, "a claiming process failed:\n" + "\n".join(errors)
        claimed = [job_id for _, mine, _ in outcomes for job_id in mine]
        assert len(claimed) == len(set(claimed)), "a job was claimed by two processes"
        assert sorted(claimed) == sorted(str(i) for i in created)
        assert jobs.stats(now=at(1)).by_status[Status.PROCESSING] == PROCESS_JOBS

    def test_submit_concurrent_same_key_creates_one_job(self, store_opener: StoreOpener) -> None:
        with ExitStack() as stack:
            handles = [stack.enter_context(store_opener()).jobs for _ in range(4)]

            def submit_once(_: int, repo: JobRepository) -> Submitted:
                return repo.submit([new_job(key="race", payload={"same": "body"})], now=T0)[0]

            results = together(handles, 20, submit_once)
            assert len({r.job.id for r in results}) == 1
            assert sum(r.created for r in results) == 1
            assert ids(all_jobs(handles[0])) == [results[0].job.id]

    def test_submit_concurrent_same_key_other_bodies_bind_one(
        self, store_opener: StoreOpener
    ) -> None:
        with ExitStack() as stack:
            handles = [stack.enter_context(store_opener()).jobs for _ in range(4)]

            def submit_once(i: int, repo: JobRepository) -> Submitted | IdempotencyConflict:
                try:
                    return repo.submit([new_job(key="race", payload={"body": i % 2})], now=T0)[0]
                except IdempotencyConflict as exc:
                    return exc

            results = together(handles, 20, submit_once)
            [bound] = all_jobs(handles[0])
            for i, result in enumerate(results):
                if bound.payload == {"body": i % 2}:  # the winner's body: its job
                    assert isinstance(result, Submitted), result
                    assert result.job.id == bound.id
                else:
                    assert isinstance(result, IdempotencyConflict), result
            assert sum(isinstance(r, Submitted) and r.created for r in results) == 1

    def test_complete_racing_expire_of_dead_workers_ends_each_job_once(
        self, store_opener: StoreOpener
    ) -> None:
        with ExitStack() as stack:
            handles = [stack.enter_context(store_opener()).jobs for _ in range(2)]
            submit(handles[0], *(new_job(max_retries=0) for _ in range(100)), now=T0)
            workers = [f"dying-{k}" for k in range(20)]
            chunks = [claim(handles[0], now=at(1), worker_id=w, limit=5) for w in workers]

            def act(i: int, repo: JobRepository) -> list[JobRecord]:
                ended: list[JobRecord] = []
                if i == 0:  # the workers finish their jobs, first to last
                    for chunk in chunks:
                        ended += repo.complete([ref(j) for j in chunk], now=at(2))
                        time.sleep(0)  # let the other thread in: the race is the point
                    return ended
                # a reaper finds them dead, last to first: the two meet in the middle
                for worker in reversed(workers):
                    ended += repo.expire(worker_ids=[worker], now=at(2))
                    time.sleep(0)
                return ended

            done, dead = together(handles, 2, act)
            counts = Counter(ids(done) + ids(dead))
            assert sorted(counts) == sorted(ids([j for c in chunks for j in c]))
            assert set(counts.values()) == {1}, "a job was both completed and expired"
            stored = {j.id: j.status for j in all_jobs(handles[0])}
            assert {stored[i] for i in ids(done)} <= {Status.DONE}
            assert {stored[i] for i in ids(dead)} <= {Status.DLQ}

    @pytest.mark.parametrize("action", ["complete", "fail", "renew"])
    def test_a_fenced_update_racing_expiry_changes_the_job_once(
        self, store_opener: StoreOpener, action: str
    ) -> None:
        """A store that checks the lease and then writes without holding the row (a lost
        row lock, an UPDATE without the fence) lets a late complete, fail or renew undo
        the expiry of a dead worker's job. Each round gives one fresh job to the update,
        and the reaper's expire starts as soon as the update has: inside the window
        between such a store's check and its write. A few rounds in LOST_LOCK_ROUNDS
        hitting it is enough (vesper's own suite checks that against a store that drops
        the lock, every run)."""
        with ExitStack() as stack, ThreadPoolExecutor(max_workers=2) as pool:
            update, reaper = [stack.enter_context(store_opener()).jobs for _ in range(2)]

            def run_update(held: JobRecord, started: threading.Event) -> list[JobRecord]:
                started.set()
                if action == "complete":
                    return update.complete([ref(held)], now=at(2))
                if action == "fail":
                    return update.fail([failure(held, timedelta(0))], now=at(2))
                return update.renew([ref(held)], lease=HOUR, now=at(2))

            def reap(held: JobRecord, started: threading.Event) -> list[JobRecord]:
                assert started.wait(timeout=30)
                return reaper.expire(worker_ids=[held.worker_id or ""], now=at(2))

            wrong: list[str] = []
            for n in range(LOST_LOCK_ROUNDS):
                [job] = submit(update, new_job(max_retries=0), now=T0)
                [held] = claim(update, now=at(1), worker_id=f"w{n}", limit=1)
                assert held.id == job.id
                started = threading.Event()
                reaping = pool.submit(reap, held, started)
                updated = pool.submit(run_update, held, started).result(timeout=60)
                expired = reaping.result(timeout=60)
                stored = update.get(job.id)
                # an expiry is never undone: expire changed the job last if at all (it may
                # skip a job a concurrent call holds); complete and fail end the lease, so
                # they and expire never both change it (a renewed lease may still expire)
                last = expired if ids(expired) else updated
                right = ids(last) == [job.id] and stored == last[0]
                if action != "renew" and ids(updated) and ids(expired):
                    right = False
                if not right:
                    wrong.append(
                        f"round {n}: {action} changed {ids(updated)}, expire {ids(expired)}, "
                        f"the job is {stored.status.value}"
                    )
            assert not wrong, f"{len(wrong)} of {LOST_LOCK_ROUNDS} rounds:\n" + "\n".join(wrong)


def claim_until_empty(
    opener: StoreOpener,
    worker_id: str,
    now: datetime,
    start: Barrier,
    results: Queue[Outcome],
) -> None:
    """Child process: open a handle, wait for the others, claim until nothing is left."""
    mine: list[str] = []
    try:
        with opener() as store:
            start.wait(timeout=120)
            while batch := store.jobs.claim(worker_id=worker_id, limit=10, lease=HOUR, now=now):
                mine.extend(str(job.id) for job in batch)
        results.put((worker_id, mine, None))
    except BaseException:
        results.put((worker_id, mine, f"{worker_id}: {traceback.format_exc()}"))
