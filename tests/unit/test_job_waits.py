"""JobWaits: a poke that names finished jobs reads only those someone waits for; a poke
that names none (or the poll) reads every waited job. On the memory store, with the
reader's store calls recorded (the store gate is the hub's injected `read`)."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterator

import pytest

from vesper.adapters.memory import InMemoryJobRepository
from vesper.application.execution import lease_of
from vesper.application.waiting import READ_IDS, JobWaits
from vesper.domain.job import JobId, JobRecord

from .builders import LEASE, new_id, new_job

POLL_S = 60.0  # no poll within a test: only pokes and new waiters cause reads
WAIT_S = 10.0


class Reads:
    """The hub's `read`: runs the store call and records the ids it asked for."""

    def __init__(self) -> None:
        self.asked: list[set[JobId]] = []
        self.changed = threading.Condition()

    def __call__(self, call: Callable[[], list[JobRecord]]) -> list[JobRecord]:
        assert isinstance(call, functools.partial)
        found = call()
        with self.changed:
            self.asked.append(set(call.args[0]))
            self.changed.notify_all()
        return found

    def until(self, count: int) -> list[set[JobId]]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.asked) >= count, timeout=WAIT_S)
            return list(self.asked)


@pytest.fixture
def store() -> InMemoryJobRepository:
    return InMemoryJobRepository()


@pytest.fixture
def reads() -> Reads:
    return Reads()


@pytest.fixture
def waits(store: InMemoryJobRepository, reads: Reads) -> Iterator[JobWaits]:
    hub = JobWaits(store, reads, poll=POLL_S)
    yield hub
    hub.close()


def _waiting(waits: JobWaits, job_id: JobId) -> tuple[threading.Thread, list[JobRecord]]:
    answer: list[JobRecord] = []

    def wait() -> None:
        job, finished = waits.wait_blocking(job_id, WAIT_S)
        if finished:
            answer.append(job)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread, answer


def test_a_named_poke_reads_only_the_named_waited_jobs(
    store: InMemoryJobRepository, reads: Reads, waits: JobWaits
) -> None:
    submitted = store.submit([new_job() for _ in range(3)])
    ids = [s.job.id for s in submitted]
    waiting = [_waiting(waits, job_id) for job_id in ids]
    asked = reads.until(1)
    while set().union(*asked) != set(ids):  # each new waiter's job read once
        asked = reads.until(len(asked) + 1)
    before = len(asked)

    claimed = store.claim(worker_id="w", limit=1, lease=LEASE)
    store.complete([lease_of(claimed[0])])
    finished = claimed[0].id
    waits.poke([finished, new_id()])  # another process's job: nobody waits for it

    assert reads.until(before + 1)[before] == {finished}
    thread, answer = waiting[ids.index(finished)]
    thread.join(WAIT_S)
    assert [job.id for job in answer] == [finished]
    assert all(t.is_alive() for t, _ in waiting if t is not thread)  # still waiting

    waits.poke()  # names none: every waited job
    assert reads.until(before + 2)[before + 1] == set(ids) - {finished}


def test_reads_look_up_at_most_read_ids_jobs_each(
    store: InMemoryJobRepository, reads: Reads, waits: JobWaits
) -> None:
    """A read of every waited job goes in parts, so that a notification's jobs never wait
    behind hundreds of others."""
    count = 2 * READ_IDS + 1
    ids = [s.job.id for s in store.submit([new_job() for _ in range(count)])]

    async def main() -> set[JobId]:
        tasks = [asyncio.create_task(waits.wait(job_id, WAIT_S)) for job_id in ids]
        await asyncio.sleep(0)
        while set().union(*reads.asked) != set(ids):  # the new waiters' first reads
            await asyncio.sleep(0.01)
        before = len(reads.asked)
        store.complete(
            [lease_of(job) for job in store.claim(worker_id="w", limit=count, lease=LEASE)]
        )
        waits.poke()
        answered = await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
        assert all(finished for _, finished in answered)
        return set().union(*reads.asked[before:])

    assert asyncio.run(main()) == set(ids)
    assert max(len(asked) for asked in reads.asked) <= READ_IDS
