"""R1, R2 and R7 at CI scale: submissions under load, duplicates, SQLite with processes."""

from __future__ import annotations

import pytest

from tests.faults.expect import assert_row
from tests.faults.lab import Lab
from tests.faults.rows import submissions

pytestmark = pytest.mark.faults


def test_r1_burst_of_submissions_one_row_per_key_each_job_once(lab: Lab) -> None:
    assert_row(submissions.r1(lab))


def test_r2_concurrent_duplicate_keys_across_two_api_processes(lab: Lab) -> None:
    assert_row(submissions.r2(lab))


def test_r7_sqlite_api_and_three_workers_never_leak_database_is_locked(lab: Lab) -> None:
    assert_row(submissions.r7(lab))
