"""R8 at CI scale: workers with wall clocks 5 minutes ahead and behind (libfaketime)."""

from __future__ import annotations

import pytest

from tests.faults.expect import assert_row
from tests.faults.lab import Lab
from tests.faults.rows import skew
from vesper.testing.postgres import in_ci

pytestmark = pytest.mark.faults


def test_r8_skewed_worker_clocks_change_nothing(lab: Lab) -> None:
    if not skew.FAKETIME_LIB.exists():
        message = f"libfaketime is missing ({skew.FAKETIME_LIB}): apt-get install faketime"
        if in_ci():
            pytest.fail(f"{message}; CI=true, so R8 may not be skipped")
        pytest.skip(message)
    assert_row(skew.r8(lab))


def test_r8_database_clock_ahead_of_every_client_changes_nothing(lab: Lab) -> None:
    """(b) The postmaster at +120 s, API and workers at real time: delays, leases and
    backoff all follow the server's clock, so nothing starts early or is re-claimed."""
    if not skew.FAKETIME_LIB.exists():
        message = f"libfaketime is missing ({skew.FAKETIME_LIB}): apt-get install faketime"
        if in_ci():
            pytest.fail(f"{message}; CI=true, so R8 may not be skipped")
        pytest.skip(message)
    assert_row(skew.r8(lab, variant="postmaster"))
