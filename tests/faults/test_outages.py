"""R5, R6, R13 and R14 at CI scale: the database goes away, or is slow to serve."""

from __future__ import annotations

import pytest

from tests.faults.expect import assert_row
from tests.faults.lab import Lab
from tests.faults.rows import outages

pytestmark = pytest.mark.faults


def test_r5_postgres_restart_and_listen_kill_lose_nothing_and_need_no_restart(lab: Lab) -> None:
    assert_row(outages.r5(lab))


def test_r6_database_down_at_start_up_then_recovery_without_restart(lab: Lab) -> None:
    assert_row(outages.r6(lab))


def test_r6_serve_answers_health_while_its_workers_wait_for_the_database(lab: Lab) -> None:
    """`vesper serve` (API and workers in one process) behaves as `vesper api` does."""
    assert_row(outages.r6(lab, serve=True))


def test_r6_wrong_password_is_named_never_shown(lab: Lab) -> None:
    assert_row(outages.r6_password(lab))


def test_r13_session_timeouts_and_no_long_transactions(lab: Lab) -> None:
    assert_row(outages.r13(lab))


def test_r14_busy_api_pool_does_not_starve_heartbeats(lab: Lab) -> None:
    assert_row(outages.r14(lab))
