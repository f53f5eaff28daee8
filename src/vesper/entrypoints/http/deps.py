"""Use cases as Litestar dependencies, and the store calls of a request.

Store calls block (SQLAlchemy), and so does the first resolution of a use case: it
opens the store (connect, migrate). Both therefore run in worker threads, so that a
slow or unreachable database never stalls the event loop (and /health keeps
answering). The threads are abandoned, not waited for, when a request is cancelled
(the write timeout): the client gets its answer in time and the thread ends when the
driver's own timeout fires.

A request's store calls go through the process's store gate (the container builds
it: one slot per connection the store can hand out, shared with the workers): a
request waits for a slot no longer than the gate's wait from when it asked (then
StoreUnavailable, a 503 with Retry-After), and never for a connection after that. A
submission joins the process's group commit instead: waiting for its commit holds no
thread and no slot.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import anyio.to_thread
import attrs
from litestar.di import NamedDependency, Provide

from vesper.application.group_commit import GroupCommit
from vesper.application.ports import JobRepository
from vesper.application.store_gate import StoreGate
from vesper.application.submit import SubmitSteps
from vesper.application.waiting import JobWaits
from vesper.entrypoints.container import Container

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

# The container's providers that handlers may ask for, by the same name.
USE_CASES = (
    "submit_job",
    "submit_jobs",
    "get_job",
    "list_jobs",
    "cancel_job",
    "retry_job",
    "bulk_jobs",
    "get_stats",
    "get_fleet",
    "list_queues",
    "get_queue",
    "configure_queue",
    "list_schedules",
    "pause_schedule",
    "delete_schedule",
    "delete_job",
    "get_activity",  # the dashboard's chart
    "get_summary",  # the dashboard's counts
)


async def blocking(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `function` in a worker thread; on cancellation, stop waiting for it."""
    call = functools.partial(function, *args, **kwargs)
    return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)


@attrs.define
class Waits:
    """The process's JobWaits, opened (its listener too) at the first wait, not before."""

    provider: Callable[[], JobWaits]
    _waits: JobWaits | None = None

    async def get(self) -> JobWaits:
        if self._waits is None:
            self._waits = await blocking(self.provider)  # may open the store
        return self._waits


@attrs.frozen
class StoreCalls:
    """A request's way to the store: calls through the gate, submissions through the
    group commit (into `jobs()`, the store's repository)."""

    gate: StoreGate
    group: GroupCommit
    jobs: Callable[[], JobRepository]

    async def run(self, function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """`function(*args, **kwargs)` in one of the gate's threads, once a slot is free."""
        call = functools.partial(function, *args, **kwargs)
        return await self.gate.run(call, deadline=self.gate.deadline())

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

    async def submit(self, steps: SubmitSteps[T]) -> T:
        """A submission's result: its steps join the next group commit (application/
        submit.py: `SubmitJob(...).steps(request)`)."""
        return await self.group.submit_async(self.jobs(), steps)


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


def use_case_dependencies(container: Container) -> dict[str, Provide]:
    """`{"submit_job": Provide(...), ...}`: a fresh use case per request, the probe,
    and the `store_calls` (the container's gate and group commit) that handlers run
    them through.

    The providers are called on every request, so `container.x.override(...)` in a test
    takes effect without rebuilding the app.
    """
    calls = StoreCalls(container.store_gate(), container.group_commit(), container.job_repository)
    dependencies = {name: _provide(getattr(container, name)) for name in USE_CASES}
    probe = ReadinessProbe(container)

    def readiness_probe(store_calls: NamedDependency[StoreCalls]) -> ReadinessProbe:
        # after store_calls, as the use cases: see _provide
        return probe

    dependencies["readiness_probe"] = Provide(readiness_probe, sync_to_thread=False)
    dependencies["store_calls"] = Provide(lambda: calls, sync_to_thread=False)
    waits = Waits(container.shared_job_waits)
    dependencies["waits"] = Provide(lambda: waits, sync_to_thread=False)
    return dependencies
