"""Running one consumer call: sync in a thread, async on the loop, under a time limit."""

from __future__ import annotations

import asyncio
import contextvars
import logging
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
    abandon_reason: str | None = None  # set: record nothing for this attempt

    @property
    def consumer_returned(self) -> bool:
        """The consumer is done: what is left is recording its outcome."""
        return self.consumer_task is not None and self.consumer_task.done()

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
        attempt.consumer_task = asyncio.wrap_future(
            loop.run_in_executor(pool, context.run, consumer.function, job)
        )
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
