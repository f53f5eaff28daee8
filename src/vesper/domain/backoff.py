"""Retry backoff: exponential, capped, with full jitter."""

from __future__ import annotations

import random
from datetime import timedelta

import attrs

# 2**62 is far past any cap's ratio to any base; clamping keeps the factor small.
_MAX_EXPONENT = 62
_NON_NEGATIVE = attrs.validators.ge(timedelta(0))


def _duration(value: float | timedelta) -> timedelta:
    """Seconds (`vesper.Backoff(base=2, cap=600)`) or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected seconds or a timedelta, not {value!r}")
    return timedelta(seconds=value)


@attrs.frozen(kw_only=True)
class Backoff:
    """`base * 2**retries`, capped at `cap`; with jitter, a uniform draw below that."""

    base: timedelta = attrs.field(
        default=timedelta(seconds=1), converter=_duration, validator=_NON_NEGATIVE
    )
    cap: timedelta = attrs.field(
        default=timedelta(hours=1), converter=_duration, validator=_NON_NEGATIVE
    )
    jitter: bool = True

    def ceiling(self, retries: int) -> timedelta:
        """The longest delay after `retries` earlier failures."""
        factor = 1 << min(max(retries, 0), _MAX_EXPONENT)  # 2**retries, clamped
        # Exact microsecond arithmetic: base * factor > cap  <=>  base > cap // factor.
        # The product is formed only when it stays within the cap, so it cannot overflow
        # (float seconds could: timedelta.max does not survive a round trip through float).
        if self.base > self.cap // factor:
            return self.cap
        return self.base * factor

    def delay(self, retries: int, rng: random.Random | None = None) -> timedelta:
        """The delay before the next attempt; `rng` draws the jitter (injectable for tests)."""
        ceiling = self.ceiling(retries)
        if not self.jitter:
            return ceiling
        # the same draw as rng.uniform(0, ceiling), without leaving timedelta arithmetic
        return ceiling * (rng or random).random()
