"""Limits that protect decoders and the clock arithmetic: payload depth, run_at range."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from vesper.domain.errors import InvalidRequest
from vesper.domain.job import JobId
from vesper.domain.submission import JobRequest, Limits, prepare


def _nested(levels: int) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    inner = payload
    for _ in range(levels - 1):
        inner["a"] = {}
        inner = inner["a"]
    return payload


DEFAULT_LIMITS = Limits()


def _prepare(request: JobRequest, limits: Limits = DEFAULT_LIMITS) -> None:
    prepare(request, job_id=JobId(uuid.uuid4()), limits=limits, default_max_retries=3)


def test_payload_at_the_depth_limit_is_accepted() -> None:
    _prepare(JobRequest(type="t", payload=_nested(128)))


@pytest.mark.parametrize("levels", [129, 500, 50_000])
def test_payload_deeper_than_the_limit_names_the_payload(levels: int) -> None:
    with pytest.raises(InvalidRequest) as raised:
        _prepare(JobRequest(type="t", payload=_nested(levels)))
    assert raised.value.field == "payload"
    assert "128 levels" in raised.value.message


def test_lists_count_as_levels_too() -> None:
    payload: dict[str, Any] = {"a": [[[1]]]}
    with pytest.raises(InvalidRequest):
        _prepare(JobRequest(type="t", payload=payload), Limits(max_depth=3))
    _prepare(JobRequest(type="t", payload=payload), Limits(max_depth=4))


def test_run_at_that_overflows_in_utc_is_out_of_range() -> None:
    earliest = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    with pytest.raises(InvalidRequest) as raised:
        _prepare(JobRequest(type="t", run_at=earliest))
    assert raised.value.field == "run_at"


def test_timeout_message_states_seconds() -> None:
    with pytest.raises(InvalidRequest) as raised:
        _prepare(JobRequest(type="t", timeout=timedelta(days=8)))
    assert raised.value.message == "must be above 0 and at most 604800 seconds"
