"""What waits for a group commit (application/group_commit.py): each caller's
submission, the lead taken for coroutines, and how a commit's outcomes reach them."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from vesper.application.ports import JobRepository, Submitted
from vesper.application.submit import SubmitSteps
from vesper.domain.errors import StoreUnavailable
from vesper.domain.submission import NewJob

Outcome = list[Submitted] | BaseException


def commit_together(
    jobs: JobRepository, units: list[list[NewJob]], now: datetime | None = None
) -> list[Outcome]:
    """`jobs.submit` of all the units' jobs at once, and each unit's own outcome: a
    call that fails for any reason but StoreUnavailable is made again unit by unit."""
    try:  # a lone unit (a batch from one caller: W2) goes as it is, not copied
        together = units[0] if len(units) == 1 else [job for unit in units for job in unit]
        submitted = jobs.submit(together, now=now)
    except StoreUnavailable as exc:
        return [exc] * len(units)
    except Exception as exc:
        if len(units) == 1:
            return [exc]
        return [outcome for unit in units for outcome in commit_together(jobs, [unit], now)]
    if len(units) == 1:
        return [submitted]
    outcomes: list[Outcome] = []
    start = 0
    for unit in units:
        outcomes.append(submitted[start : start + len(unit)])
        start += len(unit)
    return outcomes


class Waiting:
    """One caller's submission into `target`, and its answer. A thread's comes
    prepared (`jobs`) and is answered through `event`; a coroutine's brings `steps` for
    the leader to run and is answered through `future` on `loop`."""

    __slots__ = (
        "cancelled",
        "done",
        "error",
        "event",
        "future",
        "jobs",
        "lead",
        "loop",
        "now",
        "result",
        "since",
        "steps",
        "target",
    )

    def __init__(
        self, target: JobRepository, jobs: list[NewJob] | None, now: datetime | None = None
    ) -> None:
        self.target = target
        self.jobs = jobs
        self.now = now
        self.since = time.monotonic()
        self.steps: SubmitSteps[Any] | None = None
        self.event: threading.Event | None = None
        self.lead = False  # a thread handed the lead
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[Any] | None = None
        self.cancelled = False  # its coroutine stopped waiting
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def settle(self, outcome: Outcome) -> None:
        """Its outcome; a coroutine's steps take it from there (announce, result)."""
        self.done = True
        if isinstance(outcome, BaseException):
            self.error = outcome
            if self.steps is not None:
                self.steps.close()
        elif self.steps is None:
            self.result = outcome
        else:
            try:
                self.steps.send(outcome)
                self.error = RuntimeError("a submission's steps yield their jobs once")
            except StopIteration as finished:
                self.result = finished.value
            except Exception as exc:
                self.error = exc


class LoopLead:
    """The lead, taken for coroutines: it waits on `loop` for a slot, then leads in the
    gate's thread (`started`)."""

    __slots__ = ("loop", "started", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.started = False
        self.task: asyncio.Future[None] | None = None  # referenced: a task may be collected

    def stranded(self) -> bool:
        """Its loop stopped before it could start: it never will."""
        return not self.started and not self.loop.is_running()


def answer(units: Sequence[Waiting]) -> None:
    """Wake the callers of settled units: threads at once, coroutines on their loops
    (one call per loop and batch)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Waiting]] = {}
    for unit in units:
        if unit.event is not None:
            unit.event.set()
        elif unit.loop is not None:
            by_loop.setdefault(unit.loop, []).append(unit)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits these
            loop.call_soon_threadsafe(_resolve, settled)


def on_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _resolve(units: list[Waiting]) -> None:
    for unit in units:
        future = unit.future
        if future is None or future.done():  # its request stopped waiting
            continue
        if unit.error is not None:
            future.set_exception(unit.error)
        else:
            future.set_result(unit.result)
