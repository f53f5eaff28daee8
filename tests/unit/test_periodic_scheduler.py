"""The scheduler use case on the in-memory store and a fake clock: one job per tick
whatever the number of schedulers, the catch-up rule, pausing, stale schedules, and
declaring schedules on an App."""

from __future__ import annotations

import random
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

import vesper
from vesper.adapters.clock import FixedClock
from vesper.adapters.memory import InMemoryStore
from vesper.application.periodic import (
    LATE_GRACE,
    ListSchedules,
    PauseSchedule,
    PeriodicScheduler,
    replay_window_for,
)
from vesper.application.policies import Policies
from vesper.application.submit import SubmitJob
from vesper.domain.errors import InvalidSchedule, SchedulesUnsupported
from vesper.domain.job import JobRecord, LeaseRef
from vesper.domain.periodic import Cron, Schedule, tick_key
from vesper.domain.query import JobQuery
from vesper.domain.states import Status

T0 = datetime(2030, 1, 1, 0, 0, 0, 400000, tzinfo=UTC)
EVERY_SECOND = Schedule(name="tick", cron="*/1 * * * * *", type="report", payload={"n": 1})


def scheduler(
    store: InMemoryStore,
    *schedules: Schedule,
    registry: bool = True,
    replay_window: timedelta = LATE_GRACE,
) -> PeriodicScheduler:
    return PeriodicScheduler(
        schedules=schedules or (EVERY_SECOND,),
        jobs=store.jobs,
        registry=store.schedules if registry else None,
        submit=SubmitJob(jobs=store.jobs),
        replay_window=replay_window,
    )


def all_jobs(store: InMemoryStore) -> list[JobRecord]:
    return list(store.jobs.find(JobQuery(limit=1000)).jobs)


def keys(store: InMemoryStore) -> Counter[str]:
    return Counter(job.idempotency_key or "" for job in all_jobs(store))


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def store(clock: FixedClock) -> InMemoryStore:
    return InMemoryStore(clock)


@pytest.mark.parametrize("registry", [True, False])
def test_three_schedulers_make_one_job_per_tick_and_miss_none(
    store: InMemoryStore, clock: FixedClock, registry: bool
) -> None:
    """Three processes, rounds in a random order at random moments within each second,
    one of them gone for a while and one joining late: every tick has one job."""
    rng = random.Random(17)
    fleet = [scheduler(store, registry=registry) for _ in range(2)]
    for one in fleet:
        one.declare()
        one.fire()  # the first round: nothing owed from before
    late = scheduler(store, registry=registry)
    for second in range(1, 61):
        if second == 20:
            fleet.pop(0)  # killed
        if second == 40:
            fleet.append(late)  # started
        clock.set(T0 + timedelta(seconds=second, milliseconds=rng.randint(-350, 550)))
        for one in rng.sample(fleet, len(fleet)):
            one.fire()
    counted = keys(store)
    assert set(counted.values()) == {1}, "one job per tick"
    ticks = sorted(
        datetime.strptime(k[len("periodic:tick:") :], "%Y-%m-%dT%H:%M:%S%z") for k in counted
    )
    span = int((ticks[-1] - ticks[0]).total_seconds())
    assert len(ticks) == span + 1, "no tick missing between the first and the last"
    assert ticks[0] == datetime(2030, 1, 1, 0, 0, 1, tzinfo=UTC)
    job = all_jobs(store)[0]
    assert (job.type, dict(job.payload), job.run_at) == ("report", {"n": 1}, ticks[-1])


def test_a_late_round_submits_each_tick_it_passed(store: InMemoryStore, clock: FixedClock) -> None:
    one = scheduler(store)
    one.declare()
    one.fire()
    clock.advance(timedelta(seconds=3.5))  # a loaded machine: three ticks passed
    assert [tick for _, tick, _ in one.fire().submitted] == [
        datetime(2030, 1, 1, 0, 0, s, tzinfo=UTC) for s in (1, 2, 3)
    ]
    clock.advance(timedelta(seconds=60))  # a stall: downtime, only the latest
    assert [tick for _, tick, _ in one.fire().submitted] == [
        datetime(2030, 1, 1, 0, 1, 3, tzinfo=UTC)
    ]


def test_first_round_owes_nothing_from_before(store: InMemoryStore, clock: FixedClock) -> None:
    hourly = Schedule(name="hourly", cron="0 * * * *", type="report")
    one = scheduler(store, hourly)
    one.declare()
    clock.set(datetime(2030, 1, 1, 10, 59, 59, tzinfo=UTC))
    assert one.fire().submitted == []
    clock.set(datetime(2030, 1, 1, 11, 0, 0, 1, tzinfo=UTC))
    [(name, tick, created)] = one.fire().submitted
    assert (name, tick, created) == ("hourly", datetime(2030, 1, 1, 11, tzinfo=UTC), True)


def test_restart_after_ten_minutes_submits_one_catch_up_job(
    store: InMemoryStore, clock: FixedClock
) -> None:
    """The fleet stops for 10 minutes (600 ticks of an every-second schedule) and
    restarts: one job, for the latest tick, not 600."""
    before = [scheduler(store) for _ in range(3)]
    for one in before:
        one.declare()
        one.fire()
    clock.advance(timedelta(seconds=1))
    for one in before:
        one.fire()
    assert len(all_jobs(store)) == 1
    [record] = store.schedules.list()
    stopped_after = record.last_tick
    assert stopped_after is not None
    clock.advance(timedelta(minutes=10))
    after = [scheduler(store) for _ in range(3)]
    for one in after:
        one.declare()
        one.fire()
    assert len(all_jobs(store)) == 2
    [record] = store.schedules.list()
    assert record.last_tick == stopped_after + timedelta(minutes=10)
    assert keys(store)[f"periodic:tick:{record.last_tick:%Y-%m-%dT%H:%M:%SZ}"] == 1


def test_paused_schedule_submits_nothing_and_resumes_at_next_tick(
    store: InMemoryStore, clock: FixedClock
) -> None:
    fleet = [scheduler(store) for _ in range(2)]
    for one in fleet:
        one.declare()
        one.fire()
    pause = PauseSchedule(store.jobs, store.schedules)
    assert pause("tick", True).record.paused is True
    for _ in range(5):
        clock.advance(timedelta(seconds=1))
        for one in fleet:
            assert one.fire().submitted == []
    assert all_jobs(store) == []
    pause("tick", False)
    clock.advance(timedelta(milliseconds=100))
    for one in fleet:
        assert one.fire().submitted == []  # the ticks that passed paused stay skipped
    clock.advance(timedelta(seconds=1))
    submitted = [s for one in fleet for s in one.fire().submitted]
    # each process submits the tick: the first creates its job, the second replays it
    assert [created for _, _, created in submitted] == [True, False]
    assert len(all_jobs(store)) == 1


def test_next_tick_follows_the_store_clock(store: InMemoryStore, clock: FixedClock) -> None:
    one = scheduler(store, Schedule(name="m", cron="*/5 * * * *", type="report"))
    one.declare()
    fired = one.fire()
    assert fired.now == T0
    assert fired.next_tick == datetime(2030, 1, 1, 0, 5, tzinfo=UTC)


def test_list_shows_next_tick_and_stale_schedules(store: InMemoryStore, clock: FixedClock) -> None:
    policies = Policies(dead_after=timedelta(seconds=30))
    gone = Schedule(name="gone", cron="0 0 * * *", type="report", timezone="Europe/Paris")
    scheduler(store, gone).declare()
    clock.advance(timedelta(seconds=31))
    scheduler(store).declare()
    views = {v.record.name: v for v in ListSchedules(store.jobs, store.schedules, policies)()}
    assert views["gone"].stale is True
    assert views["gone"].record.last_declared_at == T0
    assert views["gone"].next_tick == datetime(2030, 1, 1, 23, 0, tzinfo=UTC)  # Paris midnight
    assert views["tick"].stale is False
    assert views["tick"].next_tick == datetime(2030, 1, 1, 0, 0, 32, tzinfo=UTC)


def test_a_store_without_registry_cannot_list(store: InMemoryStore) -> None:
    with pytest.raises(SchedulesUnsupported):
        ListSchedules(store.jobs, None)()


def test_a_tick_job_that_breaks_a_limit_stops_start_up(store: InMemoryStore) -> None:
    bad = Schedule(name="bad", cron="* * * * *", type="report", priority=11)
    with pytest.raises(InvalidSchedule, match="periodic schedule 'bad': priority"):
        scheduler(store, bad)
    with pytest.raises(InvalidSchedule, match="'tick' is declared twice"):
        scheduler(store, EVERY_SECOND, EVERY_SECOND)


def test_a_schedule_s_jobs_go_to_its_queue(store: InMemoryStore, clock: FixedClock) -> None:
    low = Schedule(name="low", cron="*/1 * * * * *", type="report", queue="low")
    one = scheduler(store, low, EVERY_SECOND)
    one.declare()
    one.fire()
    clock.advance(timedelta(seconds=1))
    one.fire()
    assert sorted((job.idempotency_key or "")[:13] + job.queue for job in all_jobs(store)) == [
        "periodic:low:low",
        "periodic:tickdefault",
    ]
    with pytest.raises(InvalidSchedule, match="periodic schedule 'bad': queue"):
        scheduler(store, Schedule(name="bad", cron="* * * * *", type="r", queue="no spaces"))


# -- App.periodic ------------------------------------------------------------------------


def test_app_periodic_with_a_type_declares_when_called() -> None:
    app = vesper.App({})
    app.periodic("0 * * * *", type="cleanup", payload={"days": 7}, priority=3, queue="low")
    assert app.schedules == [
        Schedule(
            name="cleanup",
            cron="0 * * * *",
            type="cleanup",
            payload={"days": 7},
            priority=3,
            queue="low",
        )
    ]


def test_app_periodic_above_a_consumer_takes_its_type() -> None:
    app = vesper.App({})

    @app.periodic("*/10 * * * * *", name="ten", timezone="Asia/Kolkata")
    @app.consumer("report")
    def report(job: vesper.Job) -> None:
        pass

    [declared] = app.schedules
    assert (declared.name, declared.type, declared.timezone) == ("ten", "report", "Asia/Kolkata")


@pytest.mark.parametrize(
    ("cron", "zone", "named"),
    [("0 25 * * *", "UTC", "cron '0 25 * * *'"), ("* * * * *", "Nowhere/Land", "Nowhere")],
)
def test_app_periodic_refuses_a_bad_expression_or_zone_at_once(
    cron: str, zone: str, named: str
) -> None:
    app = vesper.App({})
    with pytest.raises(InvalidSchedule, match=re.escape(named)):
        app.periodic(cron, type="report", timezone=zone)
    assert app.schedules == []


def test_app_periodic_without_type_needs_a_consumer_of_one_type() -> None:
    app = vesper.App({})
    with pytest.raises(InvalidSchedule, match="no type= given"):

        @app.periodic("* * * * *")
        def lonely(job: vesper.Job) -> None:
            pass

    app.periodic("* * * * *", type="a")
    with pytest.raises(InvalidSchedule, match="'a' is declared twice"):
        app.periodic("0 * * * *", type="a")


def test_cron_parse_keeps_the_expression() -> None:
    assert Cron.parse("  0   *  * * *  ").expression == "0 * * * *"


def _finish_and_prune(store: InMemoryStore, clock: FixedClock, retention: timedelta) -> int:
    """Run every due job to done now, then prune as if `retention` later; returns how
    many jobs were deleted."""
    claimed = store.jobs.claim(worker_id="w", limit=100, lease=timedelta(seconds=30))
    store.jobs.complete([ref_of(job) for job in claimed])
    clock.set(clock.now() + retention + timedelta(milliseconds=100))
    return sum(store.jobs.prune({Status.DONE: retention}, limit=100).values())


def ref_of(job: JobRecord) -> LeaseRef:
    assert job.lease is not None
    return LeaseRef(job_id=job.id, token=job.lease.token)


def test_a_late_round_does_not_submit_again_a_tick_whose_job_was_pruned(
    store: InMemoryStore, clock: FixedClock
) -> None:
    """Retention of 5 s, shorter than the default late grace: a process that comes
    late to a round must not bring back a tick another one submitted and retention
    deleted (the soak found 17 such doubles in 10 minutes)."""
    retention = timedelta(seconds=5)
    window = replay_window_for({Status.DONE: retention})
    early, late = (scheduler(store, EVERY_SECOND, replay_window=window) for _ in range(2))
    for one in (early, late):
        one.declare()
        one.fire()
    clock.set(T0 + timedelta(seconds=1, milliseconds=100))
    first = early.fire().submitted
    assert [tick for _, tick, created in first if created] == [
        T0.replace(microsecond=0) + timedelta(seconds=1)
    ]
    assert _finish_and_prune(store, clock, retention) == 1
    late.fire()  # 5.2 s behind: downtime for it, the latest tick only
    submitted = Counter(job.idempotency_key for job in all_jobs(store))
    assert tick_key("tick", first[0][1]) not in submitted, "the pruned tick came back"


def test_a_stalled_round_does_not_submit_again_a_recorded_tick(
    store: InMemoryStore, clock: FixedClock
) -> None:
    """A schedule of once a minute: a process stalled past the grace submits the latest
    tick only, and not when the store recorded it as submitted (its job may be gone)."""
    minutely = Schedule(name="minute", cron="0 * * * * *", type="report", payload={})
    retention = timedelta(seconds=5)
    window = replay_window_for({Status.DONE: retention})
    early, stalled = (scheduler(store, minutely, replay_window=window) for _ in range(2))
    for one in (early, stalled):
        one.declare()
        one.fire()
    minute = T0.replace(second=0, microsecond=0) + timedelta(minutes=1)
    clock.set(minute + timedelta(milliseconds=100))
    assert [created for _, _, created in early.fire().submitted] == [True]
    assert _finish_and_prune(store, clock, retention) == 1
    clock.set(minute + timedelta(seconds=20))
    assert stalled.fire().submitted == []
    assert all_jobs(store) == []


def test_ticks_a_stalled_fleet_missed_are_all_submitted_after_the_stall(
    store: InMemoryStore, clock: FixedClock
) -> None:
    """Every process stalled for 5.5 s (a store outage), retention 5 s: none of the
    ticks in between was submitted or recorded, so the first round after the stall
    submits each of them (the replay window guards recorded ticks only)."""
    window = replay_window_for({Status.DONE: timedelta(seconds=5)})
    fleet = [scheduler(store, EVERY_SECOND, replay_window=window) for _ in range(2)]
    for one in fleet:
        one.declare()
        one.fire()
    for second in range(1, 4):
        clock.set(T0 + timedelta(seconds=second))
        for one in fleet:
            one.fire()
    clock.set(T0 + timedelta(seconds=8.5))
    fleet[0].fire()
    fleet[1].fire()
    base = T0.replace(microsecond=0)
    expected = {tick_key("tick", base + timedelta(seconds=s)) for s in range(1, 9)}
    assert set(keys(store)) == expected
    assert set(keys(store).values()) == {1}
