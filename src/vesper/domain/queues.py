"""Named queues: their names, their fleet-wide settings, and the rules a claim keeps.

A queue exists as soon as a job or a setting names it. Its settings (pause, limits,
aging) live in the store, and every store applies them with the functions below, so
that the three stores agree on what a limit allows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

import attrs

from vesper.domain.errors import InvalidRequest
from vesper.domain.states import Status

T = TypeVar("T")

DEFAULT_QUEUE = "default"
MAX_QUEUE_LENGTH = 64
QUEUE_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
_QUEUE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_CONCURRENCY_KEY = 255
# a sliding window keeps the time of each claim it counts: its size bounds the log
MAX_RATE = 10_000
MAX_PRIORITY = 10
_RATE = re.compile(r"\s*(\d+)\s*/\s*(\S+)\s*")


def check_queue(name: object, field: str = "queue") -> str:
    """`name` if it is a queue name (1-64 of A-Z a-z 0-9 _ . -); InvalidRequest otherwise."""
    if not isinstance(name, str) or _QUEUE.fullmatch(name) is None:
        raise InvalidRequest(field, "must be 1 to 64 characters of A-Z a-z 0-9 _ . -")
    return name


def check_concurrency_key(key: object) -> None:
    if key is None:
        return
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_CONCURRENCY_KEY:
        raise InvalidRequest("concurrency_key", f"must be 1 to {MAX_CONCURRENCY_KEY} characters")
    if any(ch < " " or "\x7f" <= ch <= "\x9f" for ch in key):
        raise InvalidRequest("concurrency_key", "must not contain control characters")


@attrs.frozen(kw_only=True)
class Rate:
    """At most `limit` claims in any `period` (a sliding window)."""

    limit: int
    period: timedelta

    def __str__(self) -> str:
        return f"{self.limit}/{_duration_text(self.period)}"


def parse_rate(text: object) -> Rate:
    """ "N/period": "50/1s", "100/1m", "1000/1h" (also "50/s"); InvalidRequest otherwise."""
    if not isinstance(text, str) or (match := _RATE.fullmatch(text)) is None:
        raise InvalidRequest("rate", 'must be "N/period", e.g. "50/1s" or "100/1m"')
    limit = int(match.group(1))
    unit = match.group(2)
    period = parse_duration(unit if unit[0].isdigit() else f"1{unit}", "rate")
    if not 1 <= limit <= MAX_RATE:
        raise InvalidRequest("rate", f"must allow 1 to {MAX_RATE} claims per period")
    if not timedelta(milliseconds=1) <= period <= timedelta(days=1):
        raise InvalidRequest("rate", "must have a period from 1ms to 24h")
    return Rate(limit=limit, period=period)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: object, field: str) -> timedelta:
    """ "500ms", "5s", "1m30s", "2h", "1d"; InvalidRequest naming `field` otherwise."""
    if not isinstance(text, str):
        raise InvalidRequest(field, 'must be a duration such as "500ms", "5s", "5m" or "1h"')
    stripped = text.strip()
    if not stripped or _DURATION_PART.sub("", stripped) != "":
        raise InvalidRequest(field, 'must be a duration such as "500ms", "5s", "5m" or "1h"')
    seconds = sum(float(n) * _UNIT[u] for n, u in _DURATION_PART.findall(stripped))
    if not math.isfinite(seconds) or seconds > 366 * 86400:
        raise InvalidRequest(field, "is out of range")
    return timedelta(seconds=seconds)


def _duration_text(value: timedelta) -> str:
    micros = value // timedelta(microseconds=1)
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000)):
        if micros % size == 0:
            return f"{micros // size}{unit}"
    if micros % 1_000_000 == 0:
        return f"{micros // 1_000_000}s"
    if micros % 1000 == 0:
        return f"{micros // 1000}ms"
    return f"{micros / 1_000_000:g}s"


def duration_text(value: timedelta) -> str:
    """A duration as the API writes it back: "5m", "1s", "250ms"."""
    return _duration_text(value)


@attrs.frozen(kw_only=True)
class QueueSettings:
    """A queue's fleet-wide controls; None means not set (no limit)."""

    name: str
    paused: bool = False
    concurrency: int | None = None  # jobs of the queue processing at once, fleet-wide
    rate: Rate | None = None  # claims per period, fleet-wide
    key_concurrency: int | None = None  # processing jobs per concurrency_key
    aging: timedelta | None = None  # effective priority +1 per interval waited

    @property
    def limited(self) -> bool:
        """Whether a claim must consult these settings (the rest take the fast path)."""
        return (
            self.paused
            or self.concurrency is not None
            or self.rate is not None
            or self.key_concurrency is not None
            or self.aging is not None
        )


UNSET = object()
"""A field a QueueChange leaves as it is (None clears a setting)."""


@attrs.frozen(kw_only=True)
class QueueChange:
    """What a PATCH changes: each field is UNSET (unchanged), None (cleared) or a value."""

    paused: object = UNSET
    concurrency: object = UNSET
    rate: object = UNSET
    key_concurrency: object = UNSET
    aging: object = UNSET

    def apply(self, settings: QueueSettings) -> QueueSettings:
        """The settings after this change; InvalidRequest names the first bad field."""
        changes: dict[str, object] = {}
        if self.paused is not UNSET:
            if not isinstance(self.paused, bool):
                raise InvalidRequest("paused", "must be true or false")
            changes["paused"] = self.paused
        for field in ("concurrency", "key_concurrency"):
            value = getattr(self, field)
            if value is UNSET:
                continue
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100_000
            ):
                raise InvalidRequest(field, "must be an integer from 1 to 100000, or null")
            changes[field] = value
        if self.rate is not UNSET:
            rate = self.rate
            changes["rate"] = None if rate is None or isinstance(rate, Rate) else parse_rate(rate)
        if self.aging is not UNSET:
            aging = self.aging
            if aging is not None and not isinstance(aging, timedelta):
                aging = parse_duration(aging, "aging")
            if aging is not None and not timedelta(milliseconds=1) <= aging:
                raise InvalidRequest("aging", "must be 1ms or longer")
            changes["aging"] = aging
        return attrs.evolve(settings, **changes)  # type: ignore[arg-type]


def effective_priority(
    priority: int, run_at: datetime, now: datetime, aging: timedelta | None
) -> int:
    """The priority a claim orders by: +1 per `aging` interval waited since run_at,
    at most 10. The job's own priority is unchanged."""
    if aging is None or run_at >= now:
        return priority
    return min(MAX_PRIORITY, priority + (now - run_at) // aging)


def rate_allowance(rate: Rate | None, log: Sequence[datetime], now: datetime) -> int:
    """How many claims the sliding window admits at `now`, given the times of the
    earlier claims it counts (`log`); a large number when no rate is set."""
    if rate is None:
        return MAX_RATE * 100
    since = now - rate.period
    recent = sum(1 for moment in log if moment > since)
    return max(rate.limit - recent, 0)


def rate_log_after(
    rate: Rate | None, log: Sequence[datetime], now: datetime, claimed: int
) -> list[datetime]:
    """The claim log after `claimed` claims at `now`: the window's claims only."""
    if rate is None:
        return []
    since = now - rate.period
    return sorted([m for m in log if m > since] + [now] * claimed)[-rate.limit :]


def queue_allowance(
    settings: QueueSettings, *, processing: int, log: Sequence[datetime], now: datetime, limit: int
) -> int:
    """How many jobs one claim may take from the queue: paused takes none; the
    concurrency and rate limits cap it (key_concurrency is applied per job)."""
    if settings.paused or limit <= 0:
        return 0
    allowed = limit
    if settings.concurrency is not None:
        allowed = min(allowed, settings.concurrency - processing)
    allowed = min(allowed, rate_allowance(settings.rate, log, now))
    return max(allowed, 0)


def pick_by_key(
    candidates: Sequence[tuple[T, str | None]],
    busy: Mapping[str, int],
    key_concurrency: int | None,
    limit: int,
) -> list[T]:
    """The candidates (in claim order) a claim takes: at most `limit`, and with
    key_concurrency set no key past it (counting its processing jobs, `busy`)."""
    taken: list[T] = []
    counts = dict(busy)
    for item, key in candidates:
        if len(taken) >= limit:
            break
        if key_concurrency is not None and key is not None:
            if counts.get(key, 0) >= key_concurrency:
                continue
            counts[key] = counts.get(key, 0) + 1
        taken.append(item)
    return taken


@attrs.frozen(kw_only=True)
class QueueState:
    """One queue as a store sees it at `now`: counts, the oldest due job, the types of
    its due jobs, and its settings."""

    settings: QueueSettings
    counts: Mapping[Status, int]
    oldest_due_run_at: datetime | None
    due_types: tuple[str, ...]
    now: datetime

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def oldest_due_age(self) -> timedelta:
        if self.oldest_due_run_at is None:
            return timedelta(0)
        return max(self.now - self.oldest_due_run_at, timedelta(0))
