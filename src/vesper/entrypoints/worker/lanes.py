"""Lanes: how the worker's store calls reach the store.

The runner takes two: a main lane (claims, outcomes, releases, maintenance) and a beat
lane (register, heartbeat, lease renewal, deregister), so that a saturated main lane
never delays a renewal. A lane is anything with the `run` below: the process's shared
store gate (`vesper.application.store_gate.StoreGate`) is the main lane, and a gate
with threads of its own and no bound the beat lane.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

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

    async def settle(self, timeout: float) -> bool:
        """Wait (at most `timeout` seconds) until the calls that ran on after their
        caller was cancelled have returned; whether they all did."""
        ...
