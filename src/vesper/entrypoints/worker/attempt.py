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


@attrs.define(eq=False)
class ConsumerCall:
    """The I/O side of one attempt: the task that drives it, its consumer's task, and a
    sync consumer's thread (the core's `Attempt` holds the rest)."""

    attempt: Attempt
    task: asyncio.Task[None] | None = None
    consumer_task: asyncio.Future[object] | None = None
    # a sync consumer's thread: it may outlive consumer_task (cancelled on a time limit or
    # an abandon), and holds its slot until it returns
    thread: concurrent.futures.Future[object] | None = None

    def when_consumer_exits(self, callback: Callable[[], None]) -> None:
        """Call `callback` on the loop once the consumer's code has really stopped: a
        cancelled async consumer may still be unwinding, a sync one may still hold its
        thread (Python cannot stop a thread)."""
        loop = asyncio.get_running_loop()
        if self.thread is not None:  # sync: the thread's future, done on that thread
            if not self.thread.done():

                def on_loop(_: object) -> None:
                    with contextlib.suppress(RuntimeError):  # the loop closed: nothing to free
                        loop.call_soon_threadsafe(callback)

                self.thread.add_done_callback(on_loop)
                return
        elif self.consumer_task is not None and not self.consumer_task.done():  # async
            self.consumer_task.add_done_callback(lambda _: callback())
            return
        callback()

    def cancel(self) -> None:
        """Stop an async consumer at its next await (the core told a sync one through
        `Job.stopping` when it gave the attempt up)."""
        if self.consumer_task is not None:
            self.consumer_task.cancel()


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
    loop = asyncio.get_running_loop()
    if consumer.is_async:
        call.consumer_task = asyncio.ensure_future(
            _async_first_line(may_begin, consumer.function, job)
        )
    else:
        # copy_context: the consumer's own spans and log lines keep the job's context
        context = contextvars.copy_context()
        call.thread = pool.submit(context.run, _sync_first_line, may_begin, consumer.function, job)
        call.consumer_task = asyncio.wrap_future(call.thread, loop=loop)
    seconds = timeout.total_seconds() if timeout is not None else None
    try:
        value = await asyncio.wait_for(asyncio.shield(call.consumer_task), seconds)
    except TimeoutError:
        job.stop("time limit")
        call.consumer_task.cancel()
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


def _describe(exc: BaseException) -> str:
    """The job's error field: exception type and message, no traceback (that goes to the log)."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
