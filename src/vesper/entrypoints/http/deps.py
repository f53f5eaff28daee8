"""Use cases as Litestar dependencies, and running blocking store calls off the loop.

Store calls block (SQLAlchemy), and so does the first resolution of a use case: it
opens the store (connect, migrate). Both therefore run in worker threads, so that a
slow or unreachable database never stalls the event loop (and /health keeps
answering). The threads are abandoned, not waited for, when a request is cancelled
(the write timeout): the client gets its answer in time and the thread ends when the
driver's own timeout fires.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import anyio.to_thread
import attrs
from litestar.di import Provide

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
    "get_stats",
    "get_fleet",
)


async def blocking(function: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `function` in a worker thread; on cancellation, stop waiting for it."""
    call = functools.partial(function, *args, **kwargs)
    return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)


async def presented(
    present: Callable[[T], R], use_case: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> R:
    """`present(use_case(...))` in one worker thread: turning a job with a large payload
    into JSON walks it in Python, which must not stall the loop either."""

    def run() -> R:
        return present(use_case(*args, **kwargs))

    return await blocking(run)


def _provide(provider: Callable[[], object]) -> Provide:
    """Resolve in a thread until a resolution succeeded once (the store is open), then
    inline: with the store's resource initialized, resolving only builds small objects."""
    store_open = False

    async def resolve() -> Any:
        nonlocal store_open
        if store_open:
            return provider()
        use_case = await blocking(provider)
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
    """`{"submit_job": Provide(...), ...}`: a fresh use case per request, and the probe.

    The providers are called on every request, so `container.x.override(...)` in a test
    takes effect without rebuilding the app.
    """
    dependencies = {name: _provide(getattr(container, name)) for name in USE_CASES}
    probe = ReadinessProbe(container)
    dependencies["readiness_probe"] = Provide(lambda: probe, sync_to_thread=False)
    return dependencies
