"""WorkerRegistry: processes join, heartbeat, leave, and are reaped when silent."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import attrs

from vesper.application.ports import Store, WorkerRegistry
from vesper.domain.fleet import WorkerProcess
from vesper.testing.fixtures import T0, StoreFixtures, StoreOpener, at

DEAD_AFTER = timedelta(seconds=30)
REAPERS = 4


def process(
    worker_id: str = "host-1:100", *, machine: str = "host-1", pid: int = 100, concurrency: int = 4
) -> WorkerProcess:
    """A process as it asks to register; the registry sets both times itself."""
    long_ago = datetime(2001, 1, 1, tzinfo=UTC)
    return WorkerProcess(
        id=worker_id,
        machine=machine,
        pid=pid,
        concurrency=concurrency,
        started_at=long_ago,
        last_heartbeat=long_ago,
    )


def by_id(processes: list[WorkerProcess]) -> dict[str, WorkerProcess]:
    return {p.id: p for p in processes}


def reap_together(registry: WorkerRegistry, start: threading.Barrier) -> list[str]:
    start.wait(timeout=30)
    return registry.reap(dead_after=DEAD_AFTER, now=at(1000))


class WorkerRegistryContract(StoreFixtures):
    # -- register ---------------------------------------------------------------------

    def test_register_sets_started_at_and_heartbeat_to_now(self, workers: WorkerRegistry) -> None:
        registered = workers.register(process(), now=T0)
        assert registered == WorkerProcess(
            id="host-1:100",
            machine="host-1",
            pid=100,
            concurrency=4,
            started_at=T0,
            last_heartbeat=T0,
        )
        assert workers.processes() == [registered]

    def test_register_round_trips_process_exactly(self, workers: WorkerRegistry) -> None:
        now = datetime(2031, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
        wanted = process("mächine-ü:4194304", machine="mächine-ü", pid=4194304, concurrency=64)
        registered = workers.register(wanted, now=now)
        [stored] = workers.processes()
        assert stored == registered
        assert stored.started_at.utcoffset() == timedelta(0)
        assert stored.last_heartbeat == now

    def test_register_again_replaces_process(self, workers: WorkerRegistry) -> None:
        workers.register(process(concurrency=2), now=T0)
        again = workers.register(process(concurrency=8, pid=200), now=at(10))
        assert workers.processes() == [again]
        assert (again.concurrency, again.pid, again.started_at) == (8, 200, at(10))

    def test_register_without_now_uses_store_clock(self, store: Store) -> None:
        before = store.jobs.now()
        registered = store.workers.register(process())
        assert store.workers.heartbeat(registered.id)
        after = store.jobs.now()
        assert before <= registered.started_at <= after
        [stored] = store.workers.processes()
        assert registered.started_at <= stored.last_heartbeat <= after
        assert stored.last_heartbeat.utcoffset() == timedelta(0)

    # -- processes --------------------------------------------------------------------

    def test_processes_of_empty_registry_is_empty(self, workers: WorkerRegistry) -> None:
        assert workers.processes() == []

    def test_processes_lists_every_registered_process(self, workers: WorkerRegistry) -> None:
        registered = [
            workers.register(process(f"m{m}:{p}", machine=f"m{m}", pid=p), now=at(p))
            for m in range(2)
            for p in range(3)
        ]
        assert by_id(workers.processes()) == by_id(registered)

    # -- heartbeat --------------------------------------------------------------------

    def test_heartbeat_updates_last_heartbeat_only(self, workers: WorkerRegistry) -> None:
        registered = workers.register(process(), now=T0)
        other = workers.register(process("host-2:1", machine="host-2"), now=T0)
        assert workers.heartbeat(registered.id, now=at(5.000001)) is True
        assert by_id(workers.processes()) == {
            registered.id: WorkerProcess(
                id=registered.id,
                machine=registered.machine,
                pid=registered.pid,
                concurrency=registered.concurrency,
                started_at=T0,
                last_heartbeat=at(5.000001),
            ),
            other.id: other,
        }

    def test_heartbeat_at_the_same_timestamp_is_accepted(self, workers: WorkerRegistry) -> None:
        # a database that reports rows changed, not rows matched, returns 0 for these
        registered = workers.register(process(), now=T0)
        assert workers.heartbeat(registered.id, now=T0) is True  # as register's
        assert workers.heartbeat(registered.id, now=T0) is True  # as the last heartbeat's
        assert workers.heartbeat(registered.id, now=at(1)) is True
        assert workers.heartbeat(registered.id, now=at(1)) is True
        assert workers.processes() == [attrs.evolve(registered, last_heartbeat=at(1))]

    def test_heartbeat_unknown_process_returns_false(self, workers: WorkerRegistry) -> None:
        assert workers.heartbeat("nobody", now=T0) is False
        assert workers.processes() == []

    def test_heartbeat_after_reap_returns_false(self, workers: WorkerRegistry) -> None:
        workers.register(process(), now=T0)
        assert workers.reap(dead_after=DEAD_AFTER, now=at(60)) == ["host-1:100"]
        assert workers.heartbeat("host-1:100", now=at(61)) is False
        assert workers.processes() == []

    # -- deregister -------------------------------------------------------------------

    def test_deregister_removes_process(self, workers: WorkerRegistry) -> None:
        workers.register(process("a"), now=T0)
        kept = workers.register(process("b"), now=T0)
        workers.deregister("a")
        assert workers.processes() == [kept]
        assert workers.heartbeat("a", now=at(1)) is False

    def test_deregister_unknown_is_ignored(self, workers: WorkerRegistry) -> None:
        kept = workers.register(process(), now=T0)
        workers.deregister("nobody")
        assert workers.processes() == [kept]

    # -- reap -------------------------------------------------------------------------

    def test_reap_removes_only_stale_processes(self, workers: WorkerRegistry) -> None:
        workers.register(process("stale"), now=T0)
        fresh = workers.register(process("fresh"), now=T0)
        workers.register(process("also-stale"), now=at(5))
        workers.heartbeat("fresh", now=at(50))
        reaped = workers.reap(dead_after=DEAD_AFTER, now=at(60))
        assert sorted(reaped) == ["also-stale", "stale"]
        assert [p.id for p in workers.processes()] == [fresh.id]

    def test_reap_keeps_process_heartbeating_exactly_at_the_deadline(
        self, workers: WorkerRegistry
    ) -> None:
        workers.register(process("edge"), now=T0)
        assert workers.reap(dead_after=DEAD_AFTER, now=T0 + DEAD_AFTER) == []
        micro = timedelta(microseconds=1)
        assert workers.reap(dead_after=DEAD_AFTER, now=T0 + DEAD_AFTER + micro) == ["edge"]

    def test_reap_with_nothing_stale_returns_nothing(self, workers: WorkerRegistry) -> None:
        assert workers.reap(dead_after=DEAD_AFTER, now=T0) == []
        kept = workers.register(process(), now=T0)
        assert workers.reap(dead_after=DEAD_AFTER, now=at(10)) == []
        assert workers.processes() == [kept]

    def test_reap_concurrent_reapers_never_return_the_same_id(
        self, store_opener: StoreOpener
    ) -> None:
        with ExitStack() as stack:
            handles = [stack.enter_context(store_opener()).workers for _ in range(REAPERS)]
            for round_ in range(5):
                stale = {f"r{round_}-p{i}" for i in range(10)}
                for worker_id in stale:
                    handles[0].register(process(worker_id), now=at(round_))
                start = threading.Barrier(REAPERS)
                with ThreadPoolExecutor(max_workers=REAPERS) as pool:
                    rounds = pool.map(reap_together, handles, [start] * REAPERS)
                    reaped = [w for ids in rounds for w in ids]
                twice = [w for w, n in Counter(reaped).items() if n > 1]
                assert not twice, f"reaped by two reapers: {twice}"
                assert set(reaped) == stale
                assert handles[0].processes() == []
