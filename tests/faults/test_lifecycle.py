"""R4, R9, R15 and R16 at CI scale (PostgreSQL, real worker processes)."""

from __future__ import annotations

import pytest

from tests.faults.expect import assert_row
from tests.faults.lab import Lab
from tests.faults.rows import lifecycle

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
