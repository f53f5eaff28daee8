"""Claim order: priority desc, then run_at asc (FIFO), then insertion order."""

from __future__ import annotations

import itertools
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from vesper.domain.job import JobRecord
from vesper.domain.ordering import claim_order

from .builders import T0, make_job


def test_higher_priority_first_then_older_run_at_then_insertion() -> None:
    low_old = make_job(priority=0, run_at=T0 - timedelta(hours=1), seq=1)
    high_new = make_job(priority=9, run_at=T0, seq=2)
    high_old_later_seq = make_job(priority=9, run_at=T0 - timedelta(seconds=1), seq=5)
    high_old_earlier_seq = make_job(priority=9, run_at=T0 - timedelta(seconds=1), seq=3)
    mid = make_job(priority=5, run_at=T0 + timedelta(days=1), seq=4)
    jobs = [low_old, high_new, high_old_later_seq, high_old_earlier_seq, mid]
    assert sorted(jobs, key=claim_order) == [
        high_old_earlier_seq,
        high_old_later_seq,
        high_new,
        mid,
        low_old,
    ]


SPECS = st.lists(st.tuples(st.integers(0, 10), st.integers(-5, 5)), min_size=1, max_size=30)


@given(specs=SPECS)
def test_claim_order_is_a_total_order_matching_the_rule(specs: list[tuple[int, int]]) -> None:
    jobs = [
        make_job(priority=p, run_at=T0 + timedelta(seconds=s), seq=i)
        for i, (p, s) in enumerate(specs, start=1)
    ]
    ordered = sorted(jobs, key=claim_order)
    for a, b in itertools.pairwise(ordered):
        assert not _before(b, a)
        assert a.priority >= b.priority
        if a.priority == b.priority:
            assert a.run_at <= b.run_at
            if a.run_at == b.run_at:
                assert a.seq < b.seq


def _before(a: JobRecord, b: JobRecord) -> bool:
    """An independent statement of the rule: does `a` run before `b`?"""
    if a.priority != b.priority:
        return a.priority > b.priority
    if a.run_at != b.run_at:
        return a.run_at < b.run_at
    return a.seq < b.seq
