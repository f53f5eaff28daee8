"""The executor-backed lane: calls run on its own threads, at most `threads` at once;
one that cannot start before its deadline is refused."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from vesper.domain.errors import StoreUnavailable
from vesper.entrypoints.worker import ExecutorLane


def test_a_call_runs_on_the_lanes_thread_and_returns_its_result() -> None:
    lane = ExecutorLane(1, "test-lane")
    try:
        name = asyncio.run(lane.run(lambda: threading.current_thread().name))
        assert name.startswith("test-lane")
    finally:
        lane.close()


def test_a_call_that_waited_for_a_thread_past_its_deadline_is_refused() -> None:
    lane = ExecutorLane(1, "test-lane")
    release = threading.Event()
    ran: list[str] = []

    async def scenario() -> None:
        busy = asyncio.ensure_future(lane.run(lambda: release.wait(10)))
        await asyncio.sleep(0)  # the lane's only thread is taken
        late = asyncio.ensure_future(
            lane.run(lambda: ran.append("late"), deadline=time.monotonic() + 0.05)
        )
        undated = asyncio.ensure_future(lane.run(lambda: ran.append("undated")))
        await asyncio.sleep(0.2)
        release.set()
        assert await busy
        with pytest.raises(StoreUnavailable):
            await late
        await undated

    try:
        asyncio.run(scenario())
    finally:
        release.set()
        lane.close()
    assert ran == ["undated"]
