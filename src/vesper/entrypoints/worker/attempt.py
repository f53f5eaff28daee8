"""Running one consumer call: sync in a thread, async on the loop, under a time limit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import timedelta

import attrs

from vesper.application.consumers import Consumer, Job
from vesper.domain.errors import NoConsumer, NonRetryable

log = logging.getLogger("vesper.worker")


@attrs.define
class Attempt:
    """One attempt in flight: what the runner needs to stop it and to record it."""

    context: Job
    deadline: float  # monotonic time by which the lease must have been renewed
    task: asyncio.Task[None] | None = None
    consumer_task: asyncio.Future[object] | None = None
    # a sync consumer's thread: it may outlive consumer_task (cancelled on a time limit or
    # an abandon), and holds its slot until it returns
    thread: concurrent.futures.Future[object] | None = None
    abandon_reason: str | None = None  # set: record nothing for this attempt
    holds_slot: bool = True

    @property
    def consumer_returned(self) -> bool:
        """The consumer is done: what is left is recording its outcome."""
        return self.consumer_task is not None and self.consumer_task.done()

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

    def abandon(self, reason: str) -> None:
        """Stop the attempt without recording it (lease lost, or shutdown past grace)."""
        if self.abandon_reason is not None:
            return
        self.abandon_reason = reason
        self.context.stop(reason)
        if self.consumer_task is not None:
            self.consumer_task.cancel()  # an async consumer stops at its next await


@attrs.frozen
class Result:
    error: str | None  # None: success
    retryable: bool = True


async def run_attempt(
    attempt: Attempt, consumer: Consumer | None, timeout: timedelta | None, pool: Executor
) -> Result | None:
    """Run the consumer; None when the attempt was abandoned and must not be recorded."""
    job = attempt.context
    if consumer is None:
        return Result(error=_describe(NoConsumer(job.type)))
    loop = asyncio.get_running_loop()
    if consumer.is_async:
        attempt.consumer_task = asyncio.ensure_future(consumer.function(job))
    else:
        # copy_context: the consumer's own spans and log lines keep the job's context
        context = contextvars.copy_context()
        attempt.thread = pool.submit(context.run, consumer.function, job)
        attempt.consumer_task = asyncio.wrap_future(attempt.thread, loop=loop)
    seconds = timeout.total_seconds() if timeout is not None else None
    try:
        await asyncio.wait_for(asyncio.shield(attempt.consumer_task), seconds)
    except TimeoutError:
        job.stop("time limit")
        attempt.consumer_task.cancel()
        if attempt.abandon_reason is not None:
            return None
        return Result(error=f"TimeoutError: the job ran longer than its time limit of {seconds:g}s")
    except asyncio.CancelledError:
        if attempt.abandon_reason is None:
            raise  # cancelled from outside: let the runner see it
        return None
    except NonRetryable as exc:
        log.info("job %s raised NonRetryable", job.id, exc_info=exc)
        return Result(error=_describe(exc), retryable=False)
    except Exception as exc:  # the consumer's failure is the job's outcome
        log.info("job %s failed", job.id, exc_info=exc)
        return Result(error=_describe(exc))
    if attempt.abandon_reason is not None:
        return None
    return Result(error=None)


def _describe(exc: BaseException) -> str:
    """The job's error field: exception type and message, no traceback (that goes to the log)."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
