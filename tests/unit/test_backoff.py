"""Backoff: exponential, capped, full jitter; pure, with the randomness injected."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vesper.domain.backoff import Backoff

# Any retry count, far past where 2**retries would overflow a timedelta.
RETRIES = st.one_of(st.integers(-5, 100), st.integers(0, 10**30))
NON_NEGATIVE = st.timedeltas(min_value=timedelta(0))
SMALL = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=1))


@st.composite
def backoffs(draw: st.DrawFn, jitter: bool | None = None) -> Backoff:
    base = draw(st.one_of(SMALL, NON_NEGATIVE))
    cap = draw(st.one_of(SMALL, NON_NEGATIVE, st.just(timedelta.max)))
    return Backoff(base=base, cap=cap, jitter=draw(st.booleans()) if jitter is None else jitter)


@given(backoff=backoffs(), retries=RETRIES, seed=st.integers())
def test_delay_is_between_zero_and_the_cap_for_any_retries(
    backoff: Backoff, retries: int, seed: int
) -> None:
    ceiling = backoff.ceiling(retries)
    delay = backoff.delay(retries, random.Random(seed))
    assert timedelta(0) <= ceiling <= backoff.cap
    assert timedelta(0) <= delay <= ceiling


@given(backoff=backoffs(jitter=False), retries=st.lists(RETRIES, min_size=2, max_size=6))
def test_delay_without_jitter_is_non_decreasing_in_retries(
    backoff: Backoff, retries: list[int]
) -> None:
    delays = [backoff.delay(r) for r in sorted(retries)]
    assert delays == sorted(delays)


@given(backoff=backoffs(jitter=False), retries=RETRIES)
def test_delay_without_jitter_is_the_ceiling(backoff: Backoff, retries: int) -> None:
    assert backoff.delay(retries) == backoff.ceiling(retries)


@given(
    base=st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(minutes=10)),
    retries=st.integers(0, 40),
)
def test_ceiling_is_base_times_two_to_the_retries_below_the_cap(
    base: timedelta, retries: int
) -> None:
    cap = timedelta(days=10**6)
    micro = timedelta(microseconds=1)
    expected = timedelta(microseconds=min(base // micro * 2**retries, cap // micro))
    assert Backoff(base=base, cap=cap, jitter=False).ceiling(retries) == expected


@given(backoff=backoffs(jitter=True), retries=RETRIES, seed=st.integers())
def test_jitter_draws_are_deterministic_with_an_injected_rng(
    backoff: Backoff, retries: int, seed: int
) -> None:
    one, other = random.Random(seed), random.Random(seed)
    first = [backoff.delay(retries, one) for _ in range(5)]
    second = [backoff.delay(retries, other) for _ in range(5)]
    assert first == second


def test_jitter_spreads_draws_over_the_range() -> None:
    backoff = Backoff(base=timedelta(seconds=10), cap=timedelta(hours=1))
    rng = random.Random(1)
    draws = [backoff.delay(0, rng) for _ in range(200)]
    assert all(timedelta(0) <= d <= timedelta(seconds=10) for d in draws)
    assert len(set(draws)) > 150
    assert min(draws) < timedelta(seconds=2)
    assert max(draws) > timedelta(seconds=8)


@pytest.mark.parametrize(
    ("retries", "expected"),
    [
        (-3, 1),
        (0, 1),
        (1, 2),
        (2, 4),
        (5, 32),
        (11, 2048),
        (12, 3600),
        (10**6, 3600),
        (2**64, 3600),
        (10**30, 3600),
    ],
)
def test_default_policy_doubles_from_one_second_up_to_an_hour(retries: int, expected: int) -> None:
    backoff = Backoff(jitter=False)
    assert backoff.delay(retries) == timedelta(seconds=expected)


def test_huge_retries_with_the_largest_cap_do_not_overflow() -> None:
    backoff = Backoff(base=timedelta(days=1), cap=timedelta.max, jitter=False)
    assert backoff.delay(10**100) == timedelta.max


@pytest.mark.parametrize(
    "fields",
    [{"base": timedelta(seconds=-1)}, {"cap": timedelta(microseconds=-1)}],
)
def test_negative_base_or_cap_is_rejected(fields: dict[str, timedelta]) -> None:
    with pytest.raises(ValueError, match="must be >="):
        Backoff(**fields)
