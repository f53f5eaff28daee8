"""Retry backoff: exponential, capped, with full jitter."""

from __future__ import annotations

import random
from datetime import timedelta

import attrs

# 2**62 seconds is far past any cap; clamping first keeps timedelta from overflowing.
_MAX_EXPONENT = 62


@attrs.frozen(kw_only=True)
class Backoff:
    """`base * 2**retries`, capped at `cap`; with jitter, a uniform draw below that."""

    base: timedelta = timedelta(seconds=1)
    cap: timedelta = timedelta(hours=1)
    jitter: bool = True

    def ceiling(self, retries: int) -> timedelta:
        """The longest delay after `retries` earlier failures."""
        exponent = min(max(retries, 0), _MAX_EXPONENT)
        seconds = min(self.base.total_seconds() * (2**exponent), self.cap.total_seconds())
        return timedelta(seconds=seconds)

    def delay(self, retries: int, rng: random.Random | None = None) -> timedelta:
        """The delay before the next attempt; `rng` draws the jitter (injectable for tests)."""
        ceiling = self.ceiling(retries)
        if not self.jitter:
            return ceiling
        draw = (rng or random).uniform(0.0, ceiling.total_seconds())
        return timedelta(seconds=draw)
