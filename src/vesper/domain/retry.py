"""What a consumer may say about its attempt beyond succeeding or failing (`Snooze`,
`RetryAfter`), and a consumer's own retry policy (`RetryPolicy`)."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import attrs

from vesper.domain.backoff import Backoff
from vesper.domain.errors import NonRetryable


def _delay(seconds: float | timedelta) -> timedelta:
    if isinstance(seconds, timedelta):
        delay = seconds
    else:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"seconds must be a number or a timedelta, not {seconds!r}")
        if not math.isfinite(seconds):
            raise ValueError(f"seconds must be finite, not {seconds!r}")
        delay = timedelta(seconds=seconds)
    if delay < timedelta(0):
        raise ValueError(f"seconds must not be negative, not {seconds!r}")
    return delay


class Snooze(Exception):
    """Raise it from a consumer to run the job again `seconds` from now: back to pending,
    the attempt not counted, its retries unchanged, its `snoozes` counted."""

    def __init__(self, seconds: float | timedelta) -> None:
        self.delay = _delay(seconds)
        super().__init__(f"snoozed for {self.delay.total_seconds():g}s")


class RetryAfter(Exception):
    """Raise it from a consumer to fail the attempt and retry it `seconds` from now
    instead of after the backoff (dlq as usual once its retries are used up)."""

    def __init__(self, seconds: float | timedelta, message: str = "") -> None:
        self.delay = _delay(seconds)
        super().__init__(message or f"retry after {self.delay.total_seconds():g}s")


ExceptionTypes = tuple[type[BaseException], ...]


def _types(value: type[BaseException] | ExceptionTypes) -> ExceptionTypes:
    types = value if isinstance(value, tuple) else (value,)
    for item in types:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"expected exception classes, got {item!r}")
    return types


def _max_retries(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"max_retries must be a non-negative integer or None, not {value!r}")
    return value


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How the failures of one consumer's jobs are retried.

    Args:
        max_retries: the default for jobs of its type submitted without one (None: the
            service's default); a job's own max_retries wins.
        backoff: the delays between its retries (None: the service's backoff).
        retry_on: only these exceptions are retried, any other sends the job to dlq
            (empty: every exception is retried).
        discard_on: these exceptions send the job straight to dlq.
    """

    max_retries: int | None = attrs.field(default=None, converter=_max_retries)
    backoff: Backoff | None = None
    retry_on: ExceptionTypes = attrs.field(default=(), converter=_types)
    discard_on: ExceptionTypes = attrs.field(default=(), converter=_types)

    def retryable(self, error: BaseException) -> bool:
        """Whether a consumer's exception may be retried: RetryAfter always is (unless
        discarded); NonRetryable and `discard_on` never; with `retry_on`, only those."""
        if isinstance(error, (NonRetryable, *self.discard_on)):
            return False
        if isinstance(error, RetryAfter):
            return True
        return not self.retry_on or isinstance(error, self.retry_on)

    def delay(
        self, error: BaseException, *, retries: int, rng: random.Random | None = None
    ) -> timedelta | None:
        """The delay this policy sets before retrying after `error` (a retryable one),
        the job having `retries` earlier failures: RetryAfter's own, else its backoff's;
        None: the service's backoff applies."""
        if isinstance(error, RetryAfter):
            return error.delay
        if self.backoff is not None:
            return self.backoff.delay(retries, rng)
        return None
