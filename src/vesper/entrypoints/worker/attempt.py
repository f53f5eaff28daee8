"""Running one consumer call: sync in a thread, async on the loop, under a time limit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import timedelta
from typing import Any

import attrs

from vesper.application.consumers import Consumer
from vesper.application.execution import Outcome
from vesper.application.worker import Attempt
from vesper.domain.errors import NoConsumer, NonRetryable
from vesper.domain.retry import Snooze

log = logging.getLogger("vesper.worker")


class LateStart(Exception):
    """The consumer's first line was reached after the attempt's local deadline."""


def _sync_first_line(may_begin: Callable[[], bool], function: Callable[..., Any], job: Any) -> Any:
    # on the consumer's own thread, as late as vesper can look: a process paused after
    # handing the job to the thread resumes here, and must not run a lease it lost
    if not may_begin():
        raise LateStart
    return function(job)


async def _async_first_line(
    may_begin: Callable[[], bool], function: Callable[..., Awaitable[Any]], job: Any
) -> Any:
    if not may_begin():
        raise LateStart
    return await function(job)


class _TimeLimit(Exception):
    """The attempt's time limit passed (its consumer was stopped)."""


@attrs.define(eq=False)
class ConsumerCall:
    """The I/O side of one attempt: the task that drives it, in which an async consumer
    runs, and a sync consumer's thread (the core's `Attempt` holds the rest)."""

    attempt: Attempt
    task: asyncio.Task[None] | None = None
    # while an async consumer runs: the task it runs in (the attempt's), which cancel()
    # cancels
    running_in: asyncio.Task[Any] | None = None
    # a sync consumer's thread and the future the task awaits for it: the thread may
    # outlive the future (cancelled on a time limit or an abandon), and holds its slot
    # until it returns
    thread: concurrent.futures.Future[object] | None = None
    thread_result: asyncio.Future[object] | None = None

    def when_consumer_exits(self, callback: Callable[[], None]) -> None:
        """Call `callback` on the loop once the consumer's code has really stopped: a
        sync one may still hold its thread (Python cannot stop a thread); an async one
        ran in the attempt's task, so it has stopped by the time this is asked."""
        if self.thread is not None and not self.thread.done():
            loop = asyncio.get_running_loop()

            def on_loop(_: object) -> None:
                with contextlib.suppress(RuntimeError):  # the loop closed: nothing to free
                    loop.call_soon_threadsafe(callback)

            self.thread.add_done_callback(on_loop)
            return
        callback()

    def cancel(self) -> None:
        """Stop an async consumer at its next await (the core told a sync one through
        `Job.stopping` when it gave the attempt up, and its awaited future ends here)."""
        if self.running_in is not None:
            self.running_in.cancel()
        elif self.thread_result is not None:
            self.thread_result.cancel()


async def run_attempt(
    call: ConsumerCall,
    consumer: Consumer | None,
    timeout: timedelta | None,
    pool: Executor,
    may_begin: Callable[[], bool] = lambda: True,
) -> Outcome | None:
    """Run the consumer; its outcome, or None when it was cancelled because the attempt
    was given up (the core fences any outcome of an abandoned attempt), or did not begin
    because `may_begin()` (thread-safe: the local lease deadline) said no at its first
    line."""
    attempt = call.attempt
    job = attempt.job
    if consumer is None:
        return Outcome(job=attempt.record, error=_describe(NoConsumer(job.type)))
    if attempt.abandon_reason is not None:  # given up before it began (`WorkerCore.start`)
        return None
    seconds = timeout.total_seconds() if timeout is not None else None
    try:
        if consumer.is_async:
            value = await _run_async(call, consumer, seconds, may_begin)
        else:
            value = await _run_sync(call, consumer, seconds, pool, may_begin)
    except _TimeLimit:
        return Outcome(
            job=attempt.record,
            error=f"TimeoutError: the job ran longer than its time limit of {seconds:g}s",
        )
    except asyncio.CancelledError:
        if attempt.abandon_reason is None:
            raise  # cancelled from outside: let the runner see it
        return None
    except LateStart:
        log.warning(
            "job %s: its lease expired locally before its consumer's first line; not running it",
            job.id,
        )
        return None
    except Snooze as exc:
        log.info("job %s snoozed for %gs", job.id, exc.delay.total_seconds())
        return Outcome(job=attempt.record, snooze=exc.delay)
    except Exception as exc:  # the consumer's failure is the job's outcome
        policy = consumer.policy
        retryable = policy.retryable(exc)
        if isinstance(exc, NonRetryable):
            log.info("job %s raised NonRetryable", job.id, exc_info=exc)
        else:
            log.info("job %s failed%s", job.id, "" if retryable else " (not retried)", exc_info=exc)
        delay = policy.delay(exc, retries=attempt.record.retries) if retryable else None
        return Outcome(
            job=attempt.record, error=_describe(exc), retryable=retryable, retry_delay=delay
        )
    # the return value is encoded (and checked) when the outcome is recorded, off the loop
    return Outcome(job=attempt.record, result=value)


async def _run_async(
    call: ConsumerCall,
    consumer: Consumer,
    seconds: float | None,
    may_begin: Callable[[], bool],
) -> Any:
    """An async consumer runs in the attempt's own task, not in one of its own: making
    and running a second task (and the shield and wait_for around it) per job was a
    tenth of a worker's time in a drain of short jobs. cancel() cancels the task while
    the consumer runs; the time limit cancels it the same way (asyncio.timeout)."""
    task = call.running_in = call.task or asyncio.current_task()
    try:
        async with asyncio.timeout(seconds) as limit:
            return await _async_first_line(may_begin, consumer.function, call.attempt.job)
    except TimeoutError:
        if not limit.expired():
            raise  # the consumer's own TimeoutError: its failure
        call.attempt.job.stop("time limit")
        raise _TimeLimit from None
    except asyncio.CancelledError:
        if call.attempt.abandon_reason is not None and task is not None:
            task.uncancel()  # the abandon's cancel, handled: the task goes on
        raise
    finally:
        call.running_in = None


async def _run_sync(
    call: ConsumerCall,
    consumer: Consumer,
    seconds: float | None,
    pool: Executor,
    may_begin: Callable[[], bool],
) -> Any:
    """A sync consumer runs on a pool thread; past its time limit (or an abandon) the
    task stops waiting for it, and the thread keeps its slot until it returns."""
    # copy_context: the consumer's own spans and log lines keep the job's context
    context = contextvars.copy_context()
    job = call.attempt.job
    call.thread = pool.submit(context.run, _sync_first_line, may_begin, consumer.function, job)
    call.thread_result = asyncio.wrap_future(call.thread)
    try:
        return await asyncio.wait_for(asyncio.shield(call.thread_result), seconds)
    except TimeoutError:
        if not call.thread_result.done():
            job.stop("time limit")
            call.thread_result.cancel()
            raise _TimeLimit from None
        raise  # the consumer's own TimeoutError: its failure


def _describe(exc: BaseException) -> str:
    """The job's error field: exception type and message, no traceback (that goes to the log)."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
