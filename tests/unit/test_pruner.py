"""The pruner's cadence: rounds start one interval apart, however long a round takes,
so that a finished job waits at most its retention plus one interval."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import TypeVar

from vesper.domain.states import Status
from vesper.entrypoints.worker.pruner import Pruner

T = TypeVar("T")


class SlowLane:
    """A lane whose every call takes `seconds` (a store busy with claims)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def run(self, call: Callable[[], T], *, deadline: float | None = None) -> T:
        await asyncio.sleep(self.seconds)
        return call()


def test_rounds_start_one_interval_apart_when_rounds_take_long() -> None:
    starts: list[float] = []

    def prune() -> dict[Status, int]:
        starts.append(time.monotonic())
        return {Status.DONE: 1}  # a short batch: one batch a round

    async def main() -> None:
        pruner = Pruner(prune=prune, batch=500, lane=SlowLane(0.15), interval=0.3)
        pruner.start()
        await asyncio.sleep(1.6)
        await pruner.stop()

    asyncio.run(main())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) >= 4, starts
    # each round is 0.15 s of store time: counted from the round's end the gap would
    # be 0.24-0.30 s of sleep plus 0.15 s
    assert max(gaps) <= 0.3 + 0.05, gaps
