"""R3a and R3b at CI scale: crashes and pauses of a worker process (PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.faults.expect import assert_row
from tests.faults.lab import Lab
from tests.faults.rows import crashes

pytestmark = pytest.mark.faults


def test_r3a_kill_9_mid_job_loses_nothing_and_reruns_only_the_victims_jobs(lab: Lab) -> None:
    result = crashes.r3a(lab)
    assert_row(result)  # D1 (expired jobs re-queued behind the backlog) is fixed


@pytest.mark.parametrize("phase", ["claim", "outcome", "heartbeat"])
def test_r3a_kill_9_inside_a_database_write_loses_nothing(lab: Lab, phase: str) -> None:
    """The victim dies while its claim, its complete or its heartbeat waits in the
    database (held there by a lock the test takes): the statement is rolled back or
    commits for a dead owner, and either way the jobs come back within the bound."""
    result = crashes.r3a(lab, phase=phase)
    assert_row(result)


def test_r3b_sigstopped_worker_is_fenced_off(lab: Lab) -> None:
    result = crashes.r3b(lab, variant="stop")
    assert_row(result)


def test_r3b_blackholed_worker_aborts_by_its_local_deadline(lab: Lab) -> None:
    result = crashes.r3b(lab, variant="proxy")
    assert_row(result)
