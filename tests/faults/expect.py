"""Assert a row's result, with product defects that are known and reported (not fixed
here) turned into an xfail that names them, so CI stays green without hiding them."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from tests.faults.lab import RowResult

# Defects found by the matrix in code this harness may not change, reported and not yet
# fixed: failure prefix -> reason. D1 (expired jobs re-queued at now) is fixed: none now.


def assert_row(result: RowResult, known: Mapping[str, str] = {}) -> None:
    unknown = [f for f in result.failures if not any(f.startswith(k) for k in known)]
    assert not unknown, result.line()
    hit = sorted(
        {reason for k, reason in known.items() if any(f.startswith(k) for f in result.failures)}
    )
    if hit:
        pytest.xfail(f"{'; '.join(hit)} -- {result.line()}")
