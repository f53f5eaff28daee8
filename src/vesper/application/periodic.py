"""Periodic schedules: the scheduler each worker process runs, and the operator's views.

Every process that declares a schedule submits each of its ticks, with the tick's
idempotency key (`periodic:<name>:<tick>`): the first submission creates the job, the
others find it, so the fleet makes exactly one job per tick however many processes
declare it, and a tick is not lost while one of them lives. Ticks follow the store's
clock (`jobs.now()`: PostgreSQL's on PostgreSQL), so a process whose own clock is off
still fires the tick the others fire.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import attrs

from vesper.application.policies import Policies
from vesper.application.ports import JobRepository, ScheduleRegistry
from vesper.application.submit import SubmitJob
from vesper.domain.errors import (
    IdempotencyConflict,
    InvalidRequest,
    InvalidSchedule,
    SchedulesUnsupported,
)
from vesper.domain.job import JobId
from vesper.domain.periodic import Cron, Schedule, ScheduleRecord, due_ticks, tick_key
from vesper.domain.states import Status
from vesper.domain.submission import JobRequest, prepare

log = logging.getLogger("vesper.periodic")


def tick_request(schedule: Schedule, tick: datetime) -> JobRequest:
    """The job of one tick. Every process builds the same one (run_at is the tick), so
    their submissions are replays of one another, not conflicts."""
    return JobRequest(
        type=schedule.type,
        payload=schedule.payload,
        priority=schedule.priority,
        run_at=tick,
        idempotency_key=tick_key(schedule.name, tick),
        queue=schedule.queue,  # None: the type's consumer's queue, else "default"
    )


def check_schedules(schedules: Sequence[Schedule], policies: Policies) -> dict[str, Cron]:
    """Each schedule's Cron, by name, once every schedule was found able to run.

    Raises:
        InvalidSchedule: one line naming the schedule and what is wrong (its cron
            expression, time zone, or a job its ticks could not submit).
    """
    crons: dict[str, Cron] = {}
    probe = datetime(2030, 1, 1, tzinfo=UTC)
    for schedule in schedules:
        if schedule.name in crons:
            raise InvalidSchedule(
                f"periodic schedule {schedule.name!r} is declared twice (give each a name=)"
            )
        crons[schedule.name] = schedule.parsed()
        try:
            prepare(
                tick_request(schedule, probe),
                job_id=JobId(uuid.UUID(int=0)),
                limits=policies.limits,
                default_max_retries=policies.default_max_retries,
            )
        except InvalidRequest as exc:
            raise InvalidSchedule(f"periodic schedule {schedule.name!r}: {exc}") from None
    return crons


# A round later than this after the last tick a running scheduler handled counts as
# downtime (a stall, a store outage): only the latest tick is submitted.
LATE_GRACE = timedelta(seconds=10)


def replay_window_for(ages: Mapping[Status, timedelta]) -> timedelta:
    """How long after its tick a tick's job surely still holds its idempotency key,
    under a retention of `ages` (status -> age kept): a job cannot finish before its
    tick (its run_at), nor be pruned until the shortest age after that. 0.8 of it: the
    pruner's clock and the scheduler's may differ (SQLite: each process's own)."""
    shortest = min(ages.values(), default=None)
    if shortest is None:
        return LATE_GRACE
    return min(LATE_GRACE, shortest * 0.8)


@attrs.frozen
class FireRound:
    """What one round did: the ticks it submitted (name, tick, created), the store's
    time, and the next tick of any schedule (None: no schedule)."""

    now: datetime
    submitted: list[tuple[str, datetime, bool]]
    next_tick: datetime | None


class PeriodicScheduler:
    """One process's scheduler: which ticks are due, and their submission.

    Not thread-safe: one driver calls it, one round at a time.

    Each process submits every tick itself (the others' submissions are replays): a
    tick is not lost while one process that declares it runs, whatever another one
    recorded. The catch-up rule, at a process's first round: the store's last tick of
    the schedule is what was handled before; after downtime only the latest tick since
    is due. A schedule with no recorded tick owes nothing from before: it starts with
    the next tick. While running, a round that came late (by less than LATE_GRACE)
    submits each tick it passed; later than that it is downtime again (latest only).
    Paused schedules submit nothing; the ticks that pass while a process sees one
    paused are skipped by that process for good.

    Retention can delete a tick's job and so free its key: a tick older than
    `replay_window` (replay_window_for: below the shortest retention) is not submitted
    when the store has recorded it, or a later tick, as submitted. Younger ticks are
    always submitted (a replay while their key is bound), so that a process whose clock
    runs ahead, and records ticks early, cannot make the others skip one.
    """

    def __init__(
        self,
        *,
        schedules: Sequence[Schedule],
        jobs: JobRepository,
        registry: ScheduleRegistry | None,
        submit: SubmitJob,
        replay_window: timedelta = LATE_GRACE,
    ) -> None:
        self.schedules = tuple(schedules)
        self.replay_window = replay_window
        self.crons = check_schedules(self.schedules, submit.settings)
        self.jobs = jobs
        self.registry = registry
        self.submit = submit
        self._handled: dict[str, datetime] = {}  # name -> the last tick this process handled

    def declare(self) -> None:
        """Record the schedules in the store (again: their last_declared_at moves)."""
        if self.registry is not None and self.schedules:
            self.registry.declare(self.schedules)

    def fire(self) -> FireRound:
        """Submit every due tick; one store read for the time and one for the state."""
        now = self.jobs.now()
        records = {r.name: r for r in self.registry.list()} if self.registry is not None else {}
        submitted: list[tuple[str, datetime, bool]] = []
        for schedule in self.schedules:
            name = schedule.name
            record = records.get(name)
            ticks = self._due(name, record, now)
            if not ticks:
                continue
            self._handled[name] = ticks[-1]  # whatever happens below: never retried
            if record is not None and record.paused:
                continue  # skipped for good by this process
            for tick in ticks:
                if _recorded(record, tick) and now - tick > self.replay_window:
                    continue  # submitted, and its job may be pruned: its key free again
                created = self._submit(schedule, tick)
                if created is None:
                    continue
                submitted.append((name, tick, created[1]))
                if self.registry is not None:
                    self.registry.record_tick(name, tick, created[0])
        next_tick = min((c.next_after(now) for c in self.crons.values()), default=None)
        return FireRound(now=now, submitted=submitted, next_tick=next_tick)

    def _due(self, name: str, record: ScheduleRecord | None, now: datetime) -> list[datetime]:
        cron = self.crons[name]
        handled = self._handled.get(name)
        if handled is not None:  # running: a late round submits each tick it passed
            return due_ticks(cron, now=now, after=handled, late_grace=LATE_GRACE)
        # the first round: the store's last tick, if any, is what was handled before
        # (downtime: only the latest tick since is due); none: nothing is owed yet
        if record is not None and record.last_tick is not None:
            self._handled[name] = record.last_tick
        else:
            self._handled[name] = now
        return due_ticks(cron, now=now, after=self._handled[name])

    def _submit(self, schedule: Schedule, tick: datetime) -> tuple[JobId, bool] | None:
        """The tick's job and whether this call created it; None if it could not be
        submitted for a reason a retry would not change."""
        try:
            submitted = self.submit(tick_request(schedule, tick))
        except IdempotencyConflict:
            # another process declares this name with another job (a deploy under
            # way): its job stands for the tick
            log.warning(
                "periodic %r: tick %s was submitted by a process that declares "
                "another job for this name",
                schedule.name,
                tick.isoformat(),
            )
            return None
        except InvalidRequest as exc:  # the limits changed since start-up
            log.error("periodic %r: tick %s not submitted: %s", schedule.name, tick, exc)
            return None
        return submitted.job.id, submitted.created


def _recorded(record: ScheduleRecord | None, tick: datetime) -> bool:
    """Whether the store recorded `tick`, or a later one, as submitted."""
    return record is not None and record.last_tick is not None and tick <= record.last_tick


@attrs.frozen(kw_only=True)
class ScheduleView:
    """A schedule as an operator sees it: its record, its next tick, and whether any
    process still declares it."""

    record: ScheduleRecord
    next_tick: datetime | None  # None: its cron or zone does not parse here
    stale: bool


@attrs.frozen
class ListSchedules:
    """Every schedule in the store, by name.

    A schedule is stale when no process declared it for longer than dead-after (the
    schedulers declare theirs again at each heartbeat interval).

    Raises:
        SchedulesUnsupported: the store keeps no schedules.
    """

    jobs: JobRepository
    registry: ScheduleRegistry | None
    settings: Policies = Policies()

    def __call__(self) -> list[ScheduleView]:
        registry = _require(self.registry)
        now = self.jobs.now()
        return [self._view(record, now) for record in registry.list()]

    def _view(self, record: ScheduleRecord, now: datetime) -> ScheduleView:
        try:
            next_tick: datetime | None = record.schedule.parsed().next_after(now)
        except InvalidSchedule:  # declared by a process with another time zone database
            next_tick = None
        stale = record.stale(now=now, after=self.settings.dead_after)
        return ScheduleView(record=record, next_tick=next_tick, stale=stale)


@attrs.frozen
class PauseSchedule:
    """Pause (True) or resume (False) a schedule; every scheduler reads it at each tick.

    Raises:
        ScheduleNotFound, SchedulesUnsupported.
    """

    jobs: JobRepository
    registry: ScheduleRegistry | None
    settings: Policies = Policies()

    def __call__(self, name: str, paused: bool) -> ScheduleView:
        record = _require(self.registry).set_paused(name, paused)
        return ListSchedules(self.jobs, self.registry, self.settings)._view(record, self.jobs.now())


@attrs.frozen
class DeleteSchedule:
    """Forget a schedule and its state. A process that still declares it records it
    again at its next declaration (within a heartbeat interval).

    Raises:
        ScheduleNotFound, SchedulesUnsupported.
    """

    registry: ScheduleRegistry | None

    def __call__(self, name: str) -> None:
        _require(self.registry).delete(name)


def _require(registry: ScheduleRegistry | None) -> ScheduleRegistry:
    if registry is None:
        raise SchedulesUnsupported()
    return registry
