"""The store gate: admits store calls, at most one per connection the store has.

One gate per process (the composition root builds it and sizes it when the store
opens, from the capacity the store reports), shared by every caller of the store's
main connections: the HTTP API, the group commit and the workers' main lane. A call
waits for a free slot, never past its deadline: then StoreUnavailable, which the API
answers 503 with Retry-After. An admitted call finds a connection at once, so the wait
for a slot is the only wait, and a caller's deadline bounds all of it (fault row R14
in docs/reliability.md). There is no second wait in the adapter: its pool timeout is
only the backstop for callers that do not come through a gate.

Two fronts share the slots, first come first served:

- `run`, for coroutines: the wait holds no thread, and the call runs on one of the
  gate's threads (as many as slots, so an admitted call never waits for a thread). A
  caller that is cancelled stops waiting; a call already running is abandoned, not
  killed, and keeps its slot until it returns (its connection is still in use).
  `settle` waits for the abandoned calls: a caller that stops (a worker) must not
  leave its calls running past its end, where they would act after it (a heartbeat
  that registers a deregistered process again) or use a store being closed.
- `call`, for threads (a sync caller, the group commit's leader): the wait blocks the
  calling thread, and the call runs there.

A call must not enter the gate again from inside an admitted call: the inner wait
could be for the very slot the outer call holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from vesper.domain.errors import StoreUnavailable

T = TypeVar("T")

# How long a caller waits for the store by default: for a slot here, or (the backstop,
# adapters/sql) for a pooled connection. An HTTP request waits this long in all.
STORE_WAIT_S = 10.0
# Threads of a gate that admits every call (capacity None): a store without a bound
# (memory) answers in microseconds, so these are never all busy for long.
UNBOUNDED_THREADS = 32


class _Waiter:
    """A caller waiting for a slot: a thread (`event`) or a coroutine (`future`)."""

    __slots__ = ("event", "future", "granted", "loop")

    def __init__(
        self,
        event: threading.Event | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        future: asyncio.Future[None] | None = None,
    ) -> None:
        self.event = event
        self.loop = loop
        self.future = future
        self.granted = False  # set under the gate's lock when a slot is handed over


class _Admitted:
    """A call admitted by `run`: queued for a thread, running, or dropped (its caller
    was cancelled before a thread took it: it never runs, its slot is freed at once)."""

    __slots__ = ("call", "state")

    QUEUED, RUNNING, DROPPED = 0, 1, 2

    def __init__(self, call: Callable[[], object]) -> None:
        self.call = call
        self.state = self.QUEUED


def _grant(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class StoreGate:
    """Admits at most `capacity` store calls at once (None: every call at once).

    Args:
        capacity: how many calls may run at once, as the store reports it; `limit()`
            changes it (the store reports it when it opens).
        wait: how long a caller waits by default (`deadline()`).
        threads: threads for `run` when the capacity is None.
        name: the prefix of the threads' names.
    """

    def __init__(
        self,
        capacity: int | None = None,
        *,
        wait: float = STORE_WAIT_S,
        threads: int = UNBOUNDED_THREADS,
        name: str = "vesper-store",
    ) -> None:
        _check(capacity)
        self.wait = wait
        self._name = name
        self._unbounded_threads = threads
        self._lock = threading.Lock()
        self._capacity = capacity
        self._busy = 0
        self._waiters: deque[_Waiter] = deque()
        # calls still running whose caller was cancelled (`settle` waits for them)
        self._abandoned: set[concurrent.futures.Future[Any]] = set()
        self._threads = self._thread_count(capacity)
        self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix=name)

    @property
    def capacity(self) -> int | None:
        return self._capacity

    @property
    def busy(self) -> int:
        """Slots in use: calls admitted and not yet returned."""
        return self._busy

    def deadline(self) -> float:
        """The default deadline of a call that starts to wait now (time.monotonic())."""
        return time.monotonic() + self.wait

    def limit(self, capacity: int | None) -> None:
        """Admit at most `capacity` calls at once from now on (None: no bound)."""
        if capacity == self._capacity:  # the usual case: the store was open already
            return
        _check(capacity)
        with self._lock:
            self._capacity = capacity
            threads = self._thread_count(capacity)
            retired = None
            if threads > self._threads:  # an admitted call must never wait for a thread
                retired, self._threads = self._executor, threads
                self._executor = ThreadPoolExecutor(threads, thread_name_prefix=self._name)
            woken = self._hand_over()
        if retired is not None:
            retired.shutdown(wait=False)  # its calls in flight finish on its threads
        _wake(woken, self)

    async def run(self, call: Callable[[], T], *, deadline: float | None = None) -> T:
        """`call()` in one of the gate's threads, once a slot is free.

        Raises:
            StoreUnavailable: no slot freed before `deadline` (time.monotonic()). A
                caller past its deadline still takes a free slot; it waits for none.
        """
        await self._enter(deadline)
        admitted = _Admitted(call)
        context = contextvars.copy_context()  # as anyio's threads: the caller's context
        try:
            future = self._executor.submit(context.run, self._run_admitted, admitted)
        except BaseException:
            self._release()
            raise
        try:
            result: T = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            with self._lock:
                dropped = admitted.state == _Admitted.QUEUED
                admitted.state = _Admitted.DROPPED
                if not dropped:
                    self._abandoned.add(future)
            if dropped:  # no thread took it: it never runs, and frees its slot now
                self._release()
            else:  # it runs on, abandoned, and frees its slot when it returns
                future.add_done_callback(self._forget)
            raise
        return result

    async def settle(self, timeout: float) -> bool:
        """Wait until the calls abandoned by cancelled callers so far have returned, at
        most `timeout` seconds. Returns whether they all did."""
        with self._lock:
            abandoned = list(self._abandoned)
        if not abandoned:
            return True
        _, pending = await asyncio.wait(
            [asyncio.wrap_future(future) for future in abandoned], timeout=timeout
        )
        return not pending

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._abandoned.discard(future)

    def call(self, call: Callable[[], T], *, deadline: float | None = None) -> T:
        """`call()` in this thread, once a slot is free (StoreUnavailable as `run`)."""
        self._enter_blocking(deadline)
        try:
            return call()
        finally:
            self._release()

    # -- slots --------------------------------------------------------------------------

    def _run_admitted(self, admitted: _Admitted) -> Any:
        with self._lock:
            if admitted.state == _Admitted.DROPPED:
                return None
            admitted.state = _Admitted.RUNNING
        try:
            return admitted.call()
        finally:
            self._release()

    def _free(self) -> bool:
        """A slot is free for a newcomer (under the lock): nobody waits before it."""
        return self._capacity is None or (self._busy < self._capacity and not self._waiters)

    async def _enter(self, deadline: float | None) -> None:
        started = time.monotonic()
        with self._lock:
            if self._free():
                self._busy += 1
                return
            if deadline is not None and deadline <= started:
                raise self._unavailable(0.0)
            loop = asyncio.get_running_loop()
            waiter = _Waiter(loop=loop, future=loop.create_future())
            self._waiters.append(waiter)
        assert waiter.future is not None
        try:
            if deadline is None:
                await waiter.future
            else:
                async with asyncio.timeout(deadline - time.monotonic()):
                    await waiter.future
        except (TimeoutError, asyncio.CancelledError) as exc:
            with self._lock:
                granted = waiter.granted
                if not granted:
                    self._waiters.remove(waiter)
            if granted and isinstance(exc, TimeoutError):
                return  # the slot came as the wait ended: it is this caller's
            if granted:
                self._release()  # cancelled: the slot goes to the next in line
            if isinstance(exc, TimeoutError):
                raise self._unavailable(time.monotonic() - started) from None
            raise

    def _enter_blocking(self, deadline: float | None) -> None:
        started = time.monotonic()
        with self._lock:
            if self._free():
                self._busy += 1
                return
            if deadline is not None and deadline <= started:
                raise self._unavailable(0.0)
            waiter = _Waiter(event=threading.Event())
            self._waiters.append(waiter)
        assert waiter.event is not None
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if waiter.event.wait(timeout):
            return
        with self._lock:
            if waiter.granted:
                return  # the slot came as the wait ended
            self._waiters.remove(waiter)
        raise self._unavailable(time.monotonic() - started)

    def _release(self) -> None:
        with self._lock:
            self._busy -= 1
            woken = self._hand_over()
        _wake(woken, self)

    def _hand_over(self) -> list[_Waiter]:
        """Give the free slots to the callers waiting longest (under the lock)."""
        woken = []
        while self._waiters and (self._capacity is None or self._busy < self._capacity):
            waiter = self._waiters.popleft()
            waiter.granted = True
            self._busy += 1
            woken.append(waiter)
        return woken

    def _thread_count(self, capacity: int | None) -> int:
        return self._unbounded_threads if capacity is None else capacity

    def _unavailable(self, waited: float) -> StoreUnavailable:
        return StoreUnavailable(
            f"the store is unavailable: all {self._capacity} connections stayed busy "
            f"for {waited:.3g}s"
        )


def _wake(waiters: list[_Waiter], gate: StoreGate) -> None:
    for waiter in waiters:
        if waiter.event is not None:
            waiter.event.set()
            continue
        assert waiter.loop is not None
        assert waiter.future is not None
        try:
            waiter.loop.call_soon_threadsafe(_grant, waiter.future)
        except RuntimeError:  # its loop is closed: nobody waits there any more
            gate._release()


def _check(capacity: int | None) -> None:
    if capacity is not None and capacity < 1:
        raise ValueError(f"a store gate needs at least one slot, got {capacity}")
