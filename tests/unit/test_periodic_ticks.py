"""The tick arithmetic of periodic schedules (domain/periodic.py): next tick, latest
tick, the catch-up rule, daylight-saving transitions as croniter defines them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from vesper.domain.errors import InvalidSchedule
from vesper.domain.periodic import Cron, due_ticks, tick_key

US = timedelta(microseconds=1)
# zones with DST in either hemisphere, half-hour DST (Lord Howe), odd offsets
ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "America/Sao_Paulo",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "Europe/London",
]


def field(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    return st.one_of(
        st.just("*"),
        value.map(str),
        st.integers(1, max(1, (high - low) // 2)).map(lambda n: f"*/{n}"),
        st.tuples(value, value).map(lambda ab: f"{min(ab)}-{max(ab)}"),
        st.lists(value, min_size=2, max_size=3, unique=True).map(
            lambda vs: ",".join(map(str, sorted(vs)))
        ),
    )


@st.composite
def expressions(draw: st.DrawFn) -> str:
    fields = [
        draw(field(0, 59)),  # minute
        draw(field(0, 23)),  # hour
        draw(st.one_of(st.just("*"), field(1, 28))),  # day of month
        draw(st.one_of(st.just("*"), field(1, 12))),  # month
        draw(st.one_of(st.just("*"), field(0, 6))),  # weekday
    ]
    if draw(st.booleans()):
        fields.insert(0, draw(field(0, 59)))  # seconds first
    return " ".join(fields)


crons = st.builds(Cron.parse, expressions(), st.sampled_from(ZONES))
instants = st.datetimes(
    min_value=datetime(2001, 1, 1), max_value=datetime(2037, 12, 31), timezones=st.just(UTC)
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# -- the arithmetic, for any expression and zone --------------------------------------


@given(crons, instants)
def test_next_tick_is_after_and_latest_is_at_or_before(cron: Cron, moment: datetime) -> None:
    following = cron.next_after(moment)
    latest = cron.latest_at_or_before(moment)
    assert latest <= moment < following
    assert following.microsecond == latest.microsecond == 0
    assert following.tzinfo is UTC
    assert latest.tzinfo is UTC
    # no tick in between: the one after the latest is the next one
    assert cron.next_after(latest) == following


@given(crons, instants)
def test_a_tick_is_its_own_latest_and_is_reached_going_forward(
    cron: Cron, moment: datetime
) -> None:
    tick = cron.next_after(moment)
    assert cron.latest_at_or_before(tick) == tick
    assert cron.latest_at_or_before(tick - US) < tick
    assert cron.next_after(tick - US) == tick


@given(crons, instants, st.integers(0, 3 * 366 * 86400))
def test_catch_up_submits_only_the_latest_tick(cron: Cron, last: datetime, gap: int) -> None:
    """After downtime of any length, one tick is due: the latest, if later than the
    last one submitted; and once it is submitted, nothing more until the next tick."""
    last_tick = cron.latest_at_or_before(last)
    now = last + timedelta(seconds=gap)
    due = due_ticks(cron, now=now, after=last_tick)
    latest = cron.latest_at_or_before(now)
    if latest > last_tick:
        assert due == [latest]
        assert due_ticks(cron, now=now, after=latest) == []
        following = cron.next_after(now)
        assert due_ticks(cron, now=following, after=latest) == [following]
    else:
        assert due == []


@given(crons, instants, st.floats(0, 30), st.integers(1, 20))
def test_a_late_round_within_grace_submits_every_tick_it_passed(
    cron: Cron, moment: datetime, late: float, grace: int
) -> None:
    """A running scheduler whose round comes `late` seconds after its last handled tick:
    within the grace every tick since is due, in order; beyond it only the latest."""
    handled = cron.latest_at_or_before(moment)
    now = handled + timedelta(seconds=late)
    due = due_ticks(cron, now=now, after=handled, late_grace=timedelta(seconds=grace))
    passed = []
    tick = cron.next_after(handled)
    while tick <= now:
        passed.append(tick)
        tick = cron.next_after(tick)
    if late <= grace:
        assert due == passed
    else:
        assert due == passed[-1:]


@given(st.sampled_from(ZONES), instants)
def test_every_second_ticks_every_second_in_any_zone(zone: str, moment: datetime) -> None:
    cron = Cron.parse("*/1 * * * * *", zone)
    whole = moment.replace(microsecond=0)
    assert cron.latest_at_or_before(moment) == whole
    assert cron.next_after(moment) == whole + timedelta(seconds=1)


# -- a fake clock walking through ticks -----------------------------------------------


def test_walking_a_clock_submits_each_tick_once_and_in_order() -> None:
    """A scheduler's view of a fake clock moving in uneven steps: every tick of
    `*/7 * * * * *` (7 s apart, 4 s from :56 to :00) is due exactly once, in order, none
    skipped, since no step is longer than the shortest gap between two ticks."""
    cron = Cron.parse("*/7 * * * * *")
    start = at("2030-01-01T00:00:00.250000+00:00")
    now, last = start, cron.latest_at_or_before(start)
    submitted = []
    steps = [0.3, 1.1, 2.9, 0.01, 3.99, 2.5]
    for i in range(2000):
        now += timedelta(seconds=steps[i % len(steps)])
        due = due_ticks(cron, now=now, after=last)
        assert len(due) <= 1
        submitted += due
        last = due[-1] if due else last
    assert len(submitted) == len(set(submitted))
    expected = []
    tick = cron.next_after(start)
    while tick <= now:
        expected.append(tick)
        tick = cron.next_after(tick)
    assert submitted == expected


def test_keys_are_the_name_and_the_tick_in_utc() -> None:
    tick = at("2030-03-31T03:00:00+02:00")
    assert tick_key("nightly report", tick) == "periodic:nightly report:2030-03-31T01:00:00Z"


# -- daylight-saving transitions, as croniter defines them -----------------------------


def ticks(cron: Cron, start: str, count: int) -> list[datetime]:
    found, moment = [], at(start)
    for _ in range(count):
        moment = cron.next_after(moment)
        found.append(moment)
    return found


def test_spring_forward_fires_a_skipped_wall_time_once_after_the_gap() -> None:
    # New York, 2024-03-10: 02:00 EST becomes 03:00 EDT; 02:30 does not exist that day
    daily = Cron.parse("30 2 * * *", "America/New_York")
    assert ticks(daily, "2024-03-09T12:00:00-05:00", 3) == [
        at("2024-03-10T03:00:00-04:00"),  # the first instant after the gap
        at("2024-03-11T02:30:00-04:00"),
        at("2024-03-12T02:30:00-04:00"),
    ]
    half_hourly = Cron.parse("*/30 * * * *", "America/New_York")
    assert ticks(half_hourly, "2024-03-10T01:00:00-05:00", 3) == [
        at("2024-03-10T01:30:00-05:00"),
        at("2024-03-10T03:00:00-04:00"),  # nothing inside the gap
        at("2024-03-10T03:30:00-04:00"),
    ]


def test_fall_back_fires_a_repeated_wall_time_at_both_instants() -> None:
    # New York, 2024-11-03: 02:00 EDT becomes 01:00 EST; 01:30 happens twice
    daily = Cron.parse("30 1 * * *", "America/New_York")
    assert ticks(daily, "2024-11-02T12:00:00-04:00", 3) == [
        at("2024-11-03T01:30:00-04:00"),
        at("2024-11-03T01:30:00-05:00"),
        at("2024-11-04T01:30:00-05:00"),
    ]
    hourly = Cron.parse("0 * * * *", "America/New_York")
    day = ticks(hourly, "2024-11-02T23:30:00-04:00", 26)
    assert len([t for t in day if t < at("2024-11-04T00:00:00-05:00")]) == 25
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(day))


def test_latest_tick_agrees_with_the_next_across_transitions() -> None:
    daily = Cron.parse("30 2 * * *", "America/New_York")
    assert daily.latest_at_or_before(at("2024-03-10T05:00:00-04:00")) == at(
        "2024-03-10T03:00:00-04:00"
    )
    repeated = Cron.parse("30 1 * * *", "America/New_York")
    assert repeated.latest_at_or_before(at("2024-11-03T01:45:00-05:00")) == at(
        "2024-11-03T01:30:00-05:00"
    )


# -- what does not parse ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "zone", "named"),
    [
        ("61 * * * *", "UTC", "cron '61 * * * *'"),
        ("* * * *", "UTC", "cron '* * * *': needs 5 fields"),
        ("* * * * * * *", "UTC", "needs 5 fields"),
        ("", "UTC", "cron '': must be a non-empty string"),
        ("0 0 30 2 *", "UTC", "cron '0 0 30 2 *'"),  # never matches
        ("* * * * *", "Mars/Olympus_Mons", "timezone 'Mars/Olympus_Mons'"),
        ("* * * * *", "", "timezone ''"),
        ("* * * * *", "../etc/passwd", "timezone '../etc/passwd'"),
    ],
)
def test_a_bad_expression_or_zone_is_one_line_naming_it(
    expression: str, zone: str, named: str
) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        Cron.parse(expression, zone)
    message = str(caught.value)
    assert named in message
    assert "\n" not in message


@given(expressions(), st.sampled_from(ZONES))
def test_generated_expressions_parse(expression: str, zone: str) -> None:
    assume(expression)
    assert Cron.parse(expression, zone).expression == expression
