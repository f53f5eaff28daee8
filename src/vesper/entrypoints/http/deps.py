"""Use cases as Litestar dependencies, and running blocking store calls off the loop.

Store calls block (SQLAlchemy), and so does the first resolution of a use case: it
opens the store (connect, migrate). Both therefore run in worker threads, so that a
slow or unreachable database never stalls the event loop (and /health keeps
answering). The threads are abandoned, not waited for, when a request is cancelled
(the write timeout): the client gets its answer in time and the thread ends when the
driver's own timeout fires.

Store calls are admitted through a `StoreCalls` gate with one slot per connection the
store's pool can hand out: a request waits for a slot (bounded by the pool timeout,
then 503 with Retry-After), never for a thread in a queue no timeout covers.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread
import attrs
from litestar.di import NamedDependency, Provide

from vesper.adapters.sql.engines import CONNECTION_DEADLINE, POOL_TIMEOUT_S
from vesper.application.group_commit import AsyncGroupCommit
from vesper.application.ports import Submitted
from vesper.application.submit import SubmitJob
from vesper.domain.errors import StoreUnavailable
from vesper.domain.submission import JobRequest
from vesper.entrypoints.container import Container

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

# How long a request waits for a store slot: the pool's own wait for a connection.
STORE_WAIT_S: float = POOL_TIMEOUT_S

# The container's providers that handlers may ask for, by the same name.
USE_CASES = (
    "submit_job",
    "submit_jobs",
    "get_job",
    "list_jobs",
    "cancel_job",
    "retry_job",
    "get_stats",
    "get_fleet",
)


async def blocking(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `function` in a worker thread; on cancellation, stop waiting for it."""
    call = functools.partial(function, *args, **kwargs)
    return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)


@attrs.define
class StoreCalls:
    """Runs store calls in worker threads, at most `slots` at once.

    `slots` is the number of connections the store's pool can hand out (pool size plus
    overflow), so an admitted call finds a connection (or a thread) at once, and the
    wait that remains is the one for a slot: bounded by `wait` seconds, then
    StoreUnavailable, a 503 with Retry-After. Without the gate, a burst beyond the pool
    queued first for one of anyio's threads and then for a connection, and a request
    could wait longer than the pool timeout it was promised (RELIABILITY R14).
    """

    slots: int
    wait: float = attrs.field(factory=lambda: STORE_WAIT_S)
    max_batch: int = 1000
    _gate: anyio.CapacityLimiter = attrs.field(init=False)
    _threads: anyio.CapacityLimiter = attrs.field(init=False)
    _group: AsyncGroupCommit = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"store calls need at least one slot, got {self.slots}")
        self._gate = anyio.CapacityLimiter(self.slots)
        # as many threads as slots: a call holding a slot never waits for a thread
        self._threads = anyio.CapacityLimiter(self.slots)
        self._group = AsyncGroupCommit(self._run_batch, max_batch=self.max_batch)

    async def submit(self, submit_job: SubmitJob, request: JobRequest) -> Submitted:
        """`submit_job(request)`, committed together with the other submissions waiting:
        a waiting request holds no thread and no slot, each batch's commit takes one."""
        return await submit_job.in_group(request, self._group)

    async def run(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """`function(*args, **kwargs)` in a worker thread, once a slot is free."""
        call = functools.partial(function, *args, **kwargs)
        return await self._run_until(time.monotonic() + self.wait, call)

    async def _run_batch(self, call: Callable[[], R], since: float) -> R:
        # a group commit's batch waits no longer than its oldest request may: one that
        # joined while the commit before it ran has used part of its wait already
        return await self._run_until(since + self.wait, call)

    async def _run_until(self, deadline: float, call: Callable[[], R]) -> R:
        try:
            remaining = deadline - time.monotonic()
            if remaining > 0:
                with anyio.fail_after(remaining):
                    await self._gate.acquire()
            else:  # out of time: a free slot still serves it, none is waited for
                self._gate.acquire_nowait()
        except (TimeoutError, anyio.WouldBlock):
            raise StoreUnavailable(
                f"the store is unavailable: all {self.slots} connections stayed busy "
                f"for {self.wait:g}s"
            ) from None

        def in_thread() -> R:
            # in `vesper serve` the workers share the pool: the wait for a connection
            # gets what is left of this request's wait, not a pool timeout of its own
            token = CONNECTION_DEADLINE.set(deadline)
            try:
                return call()
            finally:
                CONNECTION_DEADLINE.reset(token)

        try:
            return await anyio.to_thread.run_sync(
                in_thread, abandon_on_cancel=True, limiter=self._threads
            )
        finally:
            self._gate.release()

    async def presented(
        self,
        present: Callable[[T], R],
        use_case: Callable[P, T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """`present(use_case(...))` in one worker thread: turning a job with a large
        payload into JSON walks it in Python, which must not stall the loop either."""

        def run() -> R:
            return present(use_case(*args, **kwargs))

        return await self.run(run)


def _provide(provider: Callable[[], object]) -> Provide:
    """Resolve in a thread until a resolution succeeded once (the store is open), then
    inline: with the store's resource initialized, resolving only builds small objects.

    The use case depends on `store_calls`, so that a handler asking for both resolves
    them one after the other: Litestar resolves dependencies of one level in an anyio
    task group, whose tasks and cancel scopes cost 15 % of a submission's CPU.
    """
    store_open = False

    async def resolve(store_calls: NamedDependency[StoreCalls]) -> Any:
        nonlocal store_open
        if store_open:
            return provider()
        use_case = await store_calls.run(provider)
        store_open = True
        return use_case

    return Provide(resolve)


@attrs.frozen
class ReadinessProbe:
    """Asks the store a real question (its counts); raises if it cannot answer.

    Resolving the use case is part of the probe: opening the store may be what fails.
    Call it in a worker thread.
    """

    container: Container

    def __call__(self) -> None:
        self.container.get_stats()()


def use_case_dependencies(
    container: Container, *, store_slots: int, max_batch: int
) -> dict[str, Provide]:
    """`{"submit_job": Provide(...), ...}`: a fresh use case per request, the probe,
    and the `store_calls` gate (`store_slots` at once, group commits of at most
    `max_batch` jobs) that handlers run them through.

    The providers are called on every request, so `container.x.override(...)` in a test
    takes effect without rebuilding the app.
    """
    calls = StoreCalls(store_slots, max_batch=max_batch)
    dependencies = {name: _provide(getattr(container, name)) for name in USE_CASES}
    probe = ReadinessProbe(container)

    def readiness_probe(store_calls: NamedDependency[StoreCalls]) -> ReadinessProbe:
        # after store_calls, as the use cases: see _provide
        return probe

    dependencies["readiness_probe"] = Provide(readiness_probe, sync_to_thread=False)
    dependencies["store_calls"] = Provide(lambda: calls, sync_to_thread=False)
    return dependencies
