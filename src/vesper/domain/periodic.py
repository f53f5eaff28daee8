"""Periodic schedules: what one declares, and the arithmetic of its ticks.

A tick is an instant the cron expression names, in the schedule's time zone; ticks are
whole seconds (croniter's resolution). Every instant here is aware UTC on the way in
and out; the zone matters only inside `Cron`.

Daylight-saving transitions are croniter's (croniter 2 or later with zoneinfo zones):
- spring forward: a wall time inside the skipped hour (02:30 when clocks jump from
  02:00 to 03:00) fires once, at the first instant after the gap (03:00); interval
  expressions (`*/30 * * * *`) simply have no ticks inside the gap;
- fall back: a wall time inside the repeated hour (01:30 when clocks go from 02:00
  back to 01:00) names two instants, and both are ticks; `0 * * * *` ticks every real
  hour, 25 of them that day.
A schedule in UTC (the default) has no transitions.

The catch-up rule: after downtime only the latest missed tick is due (`due_ticks`),
never the ticks before it; a running scheduler that came a few seconds late to a round
submits each tick it passed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from croniter import CroniterError, croniter

from vesper.domain.errors import InvalidSchedule
from vesper.domain.job import JobId

SECOND = timedelta(seconds=1)
MAX_NAME_LENGTH = 128
# croniter looks this far for a match: an expression that never matches (30 February)
# fails within its search instead of at each tick
_MAX_YEARS = 5
# `latest_at_or_before` starts from croniter's get_prev and checks it by stepping
# forward, which bounds a disagreement between the two directions (none seen so far)
_MAX_FORWARD_STEPS = 100


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidSchedule(f"timezone {timezone!r}: not a known IANA time zone") from None


def _whole_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


@attrs.frozen
class Cron:
    """A cron expression in a time zone: 5 fields (minute hour day month weekday) or 6
    with a leading seconds field, or an alias such as `@hourly`.

    Build it with `Cron.parse`, which checks both.
    """

    expression: str
    timezone: str = "UTC"

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Cron:
        """Raises InvalidSchedule naming the expression or the zone."""
        if not isinstance(expression, str) or not expression.strip():
            raise InvalidSchedule(f"cron {expression!r}: must be a non-empty string")
        fields = expression.split()
        if not expression.startswith("@") and len(fields) not in (5, 6):
            raise InvalidSchedule(
                f"cron {expression!r}: needs 5 fields (minute hour day month weekday) "
                "or 6 with a leading seconds field"
            )
        if not isinstance(timezone, str):
            raise InvalidSchedule(f"timezone {timezone!r}: must be a string")
        _zone(timezone)
        cron = cls(" ".join(fields), timezone)
        try:  # parse, and find one tick: an expression that never matches fails here
            cron.next_after(datetime(2025, 1, 1, tzinfo=UTC))
        except (CroniterError, ValueError, KeyError, TypeError) as exc:
            raise InvalidSchedule(f"cron {expression!r}: {exc}") from None
        return cron

    def _iterator(self, start: datetime) -> croniter:
        return croniter(
            self.expression,
            start.astimezone(ZoneInfo(self.timezone)),  # ZoneInfo caches its zones
            second_at_beginning=True,
            max_years_between_matches=_MAX_YEARS,
        )

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after `moment`."""
        # ticks are whole seconds: the ticks after `moment` are those after its second
        found: datetime = self._iterator(_whole_second(moment)).get_next(datetime)
        return found.astimezone(UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last tick at or before `moment`."""
        # the ticks at or before `moment` are those before the next whole second
        bound = _whole_second(moment) + SECOND
        tick: datetime = self._iterator(bound).get_prev(datetime).astimezone(UTC)
        # the forward direction defines the ticks: settle on one it reaches
        for _ in range(_MAX_FORWARD_STEPS):
            following = self.next_after(tick)
            if following > moment:
                return tick
            tick = following
        return tick


@attrs.frozen(kw_only=True)
class Schedule:
    """A declared schedule: each tick of `cron` submits one job of `type`.

    `queue` is the jobs' queue; None: their type's consumer's queue, else "default".
    """

    name: str
    cron: str
    timezone: str = "UTC"
    type: str
    payload: Mapping[str, Any] = attrs.field(factory=dict)
    priority: int = 0
    queue: str | None = None

    def parsed(self) -> Cron:
        """The schedule's Cron; InvalidSchedule names the schedule and what is wrong."""
        try:
            return Cron.parse(self.cron, self.timezone)
        except InvalidSchedule as exc:
            raise InvalidSchedule(f"periodic schedule {self.name!r}: {exc}") from None


def check_name(name: object) -> str:
    """A schedule's name: 1 to MAX_NAME_LENGTH printable ASCII characters (it is part
    of each tick's idempotency key)."""
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= MAX_NAME_LENGTH
        or not all(" " <= ch <= "~" for ch in name)
    ):
        raise InvalidSchedule(
            f"periodic schedule name {name!r}: must be 1 to {MAX_NAME_LENGTH} printable "
            "ASCII characters"
        )
    return name


@attrs.frozen(kw_only=True)
class ScheduleRecord:
    """A schedule as the store keeps it: its last declaration, and its state.

    `last_declared_at` is when a process last declared it (each scheduler declares its
    schedules again every few heartbeats); `last_tick` is the latest tick whose job was
    submitted, `last_job_id` that job.
    """

    schedule: Schedule
    paused: bool = False
    last_tick: datetime | None = None
    last_job_id: JobId | None = None
    last_declared_at: datetime

    @property
    def name(self) -> str:
        return self.schedule.name

    def stale(self, *, now: datetime, after: timedelta) -> bool:
        """No process declared it for longer than `after`: removed from the code, or
        every process that declares it is down."""
        return self.last_declared_at < now - after


def tick_key(name: str, tick: datetime) -> str:
    """The idempotency key of a tick's job: `periodic:<name>:<tick>`, the tick in UTC
    as 2030-01-02T03:04:05Z. One key per tick: whichever process submits it first
    creates the job, the others find it."""
    return f"periodic:{name}:{tick.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def due_ticks(
    cron: Cron, *, now: datetime, after: datetime, late_grace: timedelta | None = None
) -> list[datetime]:
    """The ticks to submit at `now`, oldest first: those after `after` (the last tick
    handled, or the moment before which nothing is owed) and at or before `now`.

    The catch-up rule: when the ticks were missed through downtime, only the latest
    is due (no backfill storm). A scheduler that was running and merely came late to
    a round (a loaded machine) passes `late_grace`: if its last handled tick is no
    older than that before `now`, every tick since is due, so that a late round skips
    none; further behind (a stall, a store outage) it is downtime again.
    """
    latest = cron.latest_at_or_before(now)
    if latest <= after:
        return []
    if late_grace is None or after < now - late_grace:
        return [latest]
    ticks: list[datetime] = []
    tick = cron.next_after(after)
    while tick <= now:  # bounded: ticks are whole seconds within late_grace
        ticks.append(tick)
        tick = cron.next_after(tick)
    return ticks
