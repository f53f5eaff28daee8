"""R4, R9, R15 and R16 at CI scale (PostgreSQL, real worker processes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.faults.expect import assert_row
from tests.faults.lab import Lab
from tests.faults.rows import lifecycle, order

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("variant", ["A", "B", "C"])
def test_r4_sigterm_shutdown(lab: Lab, variant: str) -> None:
    assert_row(lifecycle.r4(lab, variant=variant))


def test_r9_poison_and_non_retryable_jobs_reach_dlq_after_exactly_their_attempts(lab: Lab) -> None:
    assert_row(lifecycle.r9(lab))


def test_r9_p2_jobs_that_kill_their_worker_reach_dlq_by_lease_expiry_counting(lab: Lab) -> None:
    assert_row(lifecycle.r9_p2(lab))


def test_r15_claim_race_uses_the_claim_index_and_never_double_claims(lab: Lab) -> None:
    assert_row(lifecycle.r15(lab))


def test_r16_single_claimer_follows_priority_then_fifo(lab: Lab) -> None:
    assert_row(lifecycle.r16(lab))


def test_r16_fleet_never_passes_over_a_higher_priority_for_long(lab: Lab) -> None:
    assert_row(order.r16_fleet(lab))


def test_inversions_finds_a_start_that_passed_over_a_waiting_higher_priority() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def row(job_id: str, priority: int, due: float, started: float) -> dict[str, object]:
        at = t0 + timedelta(seconds=due)
        return {
            "job_id": job_id,
            "priority": priority,
            "run_at": at,
            "created_at": at,
            "started_at": t0 + timedelta(seconds=started),
        }

    waited = timedelta(seconds=0.8)
    low_first = [row("low", 1, 0, 2.0), row("high", 9, 0, 3.0)]
    assert order.inversions(low_first, waited=waited) == [("low", "high")]
    # in order, not yet waited long enough, or taken in the same moment: no inversion
    assert order.inversions([row("high", 9, 0, 1.0), row("low", 1, 0, 2.0)], waited=waited) == []
    assert order.inversions([row("low", 1, 0, 2.0), row("high", 9, 1.5, 3.0)], waited=waited) == []
    assert order.inversions([row("low", 1, 0, 2.0), row("high", 9, 0, 2.1)], waited=waited) == []
