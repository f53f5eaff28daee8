"""StoreGate: at most `capacity` store calls at once, from coroutines and threads alike,
first come first served, and no caller waits past its deadline."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from vesper.application.store_gate import StoreGate
from vesper.domain.errors import StoreUnavailable


def _hold(gate: StoreGate) -> tuple[threading.Event, threading.Thread]:
    """A thread that takes one slot until the returned event is set."""
    release, holding = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(10)

    thread = threading.Thread(target=gate.call, args=(hold,))
    thread.start()
    assert holding.wait(5)
    return release, thread


def test_calls_run_in_the_gates_threads_and_return_their_results() -> None:
    gate = StoreGate(2)

    async def scenario() -> list[Any]:
        return await asyncio.gather(*(gate.run(threading.get_ident) for _ in range(4)))

    idents = asyncio.run(scenario())
    assert threading.get_ident() not in idents
    assert gate.call(lambda: 7) == 7
    assert gate.busy == 0


def test_at_most_capacity_calls_run_at_once_from_coroutines_and_threads() -> None:
    gate = StoreGate(3)
    lock, running, peak = threading.Lock(), [0], [0]

    def work() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1

    threads = [threading.Thread(target=gate.call, args=(work,)) for _ in range(6)]
    for thread in threads:
        thread.start()

    async def scenario() -> None:
        await asyncio.gather(*(gate.run(work) for _ in range(12)))

    asyncio.run(scenario())
    for thread in threads:
        thread.join(5)
    assert peak[0] == 3
    assert gate.busy == 0


def test_a_caller_past_its_deadline_gets_store_unavailable_and_a_free_slot_still_serves() -> None:
    gate = StoreGate(1)
    # out of time, but a slot is free: served without waiting
    assert gate.call(lambda: "free", deadline=time.monotonic() - 1) == "free"
    release, holder = _hold(gate)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="all 1 connections stayed busy"):
            gate.call(lambda: None, deadline=time.monotonic() + 0.2)
        assert 0.15 < time.monotonic() - started < 2

        async def late() -> None:
            await gate.run(lambda: None, deadline=time.monotonic() + 0.2)

        with pytest.raises(StoreUnavailable, match="all 1 connections stayed busy"):
            asyncio.run(late())
        with pytest.raises(StoreUnavailable):  # a deadline already past: no wait at all
            gate.call(lambda: None, deadline=time.monotonic() - 1)
    finally:
        release.set()
        holder.join(5)
    assert gate.call(lambda: "again") == "again"


def test_waiters_are_served_in_arrival_order() -> None:
    gate = StoreGate(1)
    release, holder = _hold(gate)
    order: list[int] = []

    async def scenario() -> None:
        waiting = []
        for n in range(5):
            waiting.append(asyncio.ensure_future(gate.run(lambda n=n: order.append(n))))
            await asyncio.sleep(0.01)  # each has queued before the next
        release.set()
        await asyncio.gather(*waiting)

    asyncio.run(scenario())
    holder.join(5)
    assert order == [0, 1, 2, 3, 4]


def test_a_cancelled_waiter_takes_no_slot_and_a_running_call_keeps_its_own() -> None:
    gate = StoreGate(1)
    finish = threading.Event()

    async def scenario() -> tuple[int, int]:
        running = asyncio.ensure_future(gate.run(lambda: finish.wait(10)))
        await asyncio.sleep(0.05)
        waiter = asyncio.ensure_future(gate.run(lambda: None))
        await asyncio.sleep(0.01)
        waiter.cancel()
        running.cancel()  # abandoned: it runs on, and holds its slot until it returns
        await asyncio.gather(waiter, running, return_exceptions=True)
        busy_while_running = gate.busy
        finish.set()
        await asyncio.sleep(0.1)
        return busy_while_running, gate.busy

    busy_while_running, busy_after = asyncio.run(scenario())
    assert busy_while_running == 1
    assert busy_after == 0


def test_no_bound_admits_every_call_and_limit_sizes_the_gate_later() -> None:
    gate = StoreGate()
    assert gate.capacity is None
    release, holder = _hold(gate)
    assert gate.call(lambda: "through") == "through"  # no bound: nobody waits
    gate.limit(1)  # the store opened and reported one connection; one call still runs
    with pytest.raises(StoreUnavailable):
        gate.call(lambda: None, deadline=time.monotonic() + 0.05)
    release.set()
    holder.join(5)
    gate.limit(4)

    async def scenario() -> list[int]:
        return await asyncio.gather(*(gate.run(lambda: 1) for _ in range(8)))

    assert asyncio.run(scenario()) == [1] * 8


def test_a_slot_granted_to_a_closed_loop_passes_on() -> None:
    gate = StoreGate(1)
    release, holder = _hold(gate)
    old = asyncio.new_event_loop()
    waiting = old.create_task(gate.run(lambda: "never"))
    old.run_until_complete(asyncio.sleep(0.05))
    old.close()  # without cancelling its task: the slot it will be granted is nobody's
    release.set()
    holder.join(5)
    assert gate.call(lambda: "next", deadline=time.monotonic() + 2) == "next"
    assert not waiting.done()


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        StoreGate(0)
    with pytest.raises(ValueError, match="at least one slot"):
        StoreGate(2).limit(0)


def test_settle_waits_for_the_calls_whose_caller_was_cancelled() -> None:
    gate = StoreGate(2)
    started, release, returned = threading.Event(), threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        release.wait(10)
        returned.set()

    async def scenario() -> tuple[bool, bool, bool]:
        assert await gate.settle(0.01)  # nothing abandoned: at once
        caller = asyncio.ensure_future(gate.run(slow))
        while not started.is_set():
            await asyncio.sleep(0.001)
        caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        too_soon = await gate.settle(0.05)  # it still runs
        threading.Timer(0.1, release.set).start()
        settled = await gate.settle(5)
        return too_soon, settled, returned.is_set()

    assert asyncio.run(scenario()) == (False, True, True)
    assert gate.busy == 0
