"""Lanes: how the worker's store calls reach the store.

The runner takes two: a main lane (claims, outcomes, releases, maintenance) and a beat
lane (register, heartbeat, lease renewal, deregister), so that a saturated main lane
never delays a renewal. A lane is anything with the `run` below: the process's shared
store gate has it too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from vesper.domain.errors import StoreUnavailable

T = TypeVar("T")


class Lane(Protocol):
    async def run(self, call: Callable[[], T], *, deadline: float | None = None) -> T:
        """`call()` on a thread, once the lane admits it.

        Args:
            deadline: time.monotonic() past which the call must not start.

        Raises:
            StoreUnavailable: the deadline passed before the call could start.
        """
        ...


class ExecutorLane:
    """A lane on threads of its own: at most `threads` calls at once, the rest queue."""

    def __init__(self, threads: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)

    async def run(self, call: Callable[[], T], *, deadline: float | None = None) -> T:
        loop = asyncio.get_running_loop()
        if deadline is None:
            return await loop.run_in_executor(self._pool, call)
        return await loop.run_in_executor(self._pool, _unless_late, call, deadline)

    def close(self) -> None:
        """Take no more calls; those running finish on their threads."""
        self._pool.shutdown(wait=False)


def _unless_late(call: Callable[[], T], deadline: float) -> T:
    if time.monotonic() > deadline:
        raise StoreUnavailable("the store call waited for a thread past its deadline")
    return call()


def open_executor_lane(threads: int, name: str) -> Iterator[ExecutorLane]:
    """An ExecutorLane for the container, closed with the container's resources."""
    lane = ExecutorLane(threads, name)
    try:
        yield lane
    finally:
        lane.close()
