"""`prepare` serialises a payload once: its fingerprint and stored text must match the
fingerprint of the validated copy, as computed before (rows' fingerprints stay valid)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vesper.domain.submission import JobRequest, Limits, fingerprint, prepare


def _old_fingerprint(request: JobRequest, max_retries: int) -> str:
    copy = json.loads(json.dumps(request.payload, allow_nan=False, separators=(",", ":")))
    return fingerprint(attrs.evolve(request, payload=copy), max_retries=max_retries)


def _prepared(request: JobRequest) -> Any:
    keyed = attrs.evolve(request, idempotency_key="k")  # only a keyed job is fingerprinted
    return prepare(keyed, job_id=uuid.uuid4(), limits=Limits(), default_max_retries=3)


EXAMPLES = [
    JobRequest(type="t", payload={}),
    JobRequest(type="t", payload={"b": 1, "a": [1, 2.5, None, True], "c": {"z": "é\u0000"}}),
    JobRequest(type='x"payload":0', payload={"\u00e9\u4e2d": "\U0001f600"}, priority=7),
    JobRequest(type="t", payload={"n": 1}, run_at=datetime(2030, 1, 2, tzinfo=UTC)),
    JobRequest(type="t", payload={"n": 1}, delay=timedelta(seconds=1.5), max_retries=0),
    JobRequest(type="t", payload={"n": 1}, timeout=timedelta(minutes=2)),
    # keys JSON turns into strings: sorted as strings, like the validated copy's
    JobRequest(type="t", payload={2: "a", 10: "b", "k": {1.5: None, None: 0}}),
    JobRequest(type="t", payload={1: "a", "1": "b"}),
    JobRequest(type="t", payload={"t": (1, 2)}),
]


@pytest.mark.parametrize("request_", EXAMPLES)
def test_fingerprint_as_before(request_: JobRequest) -> None:
    new = _prepared(request_)
    assert new.fingerprint == _old_fingerprint(request_, new.max_retries)
    if new.payload_json is not None:
        assert json.loads(new.payload_json) == new.payload


def test_payload_text_is_sorted_compact_ascii() -> None:
    new = _prepared(JobRequest(type="t", payload={"b": "é", "a": {"d": 1, "c": 2}}))
    assert new.payload_json == '{"a":{"c":2,"d":1},"b":"\\u00e9"}'


def test_non_string_keys_leave_no_text() -> None:
    new = _prepared(JobRequest(type="t", payload={2: "a", 10: "b"}))
    assert new.payload_json is None
    assert new.payload == {"2": "a", "10": "b"}


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    payload=st.dictionaries(st.text(max_size=5) | st.integers(), _json, max_size=5),
    job_type=st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1
    ).filter(lambda s: s[:200].strip()),  # a blank type is refused
    priority=st.integers(0, 10),
    max_retries=st.none() | st.integers(0, 1000),
    delay=st.none() | st.floats(0, 1e6).map(lambda s: timedelta(seconds=s)),
    timeout=st.none() | st.floats(0.001, 1e5).map(lambda s: timedelta(seconds=s)),
)
def test_fingerprint_as_before_property(
    payload: dict[Any, Any],
    job_type: str,
    priority: int,
    max_retries: int | None,
    delay: timedelta | None,
    timeout: timedelta | None,
) -> None:
    request = JobRequest(
        type=job_type[:200],
        payload=payload,
        priority=priority,
        max_retries=max_retries,
        delay=delay,
        timeout=timeout if timeout and timeout > timedelta(0) else None,
    )
    new = _prepared(request)
    assert new.fingerprint == _old_fingerprint(request, new.max_retries)
    if new.payload_json is not None:
        assert json.loads(new.payload_json) == new.payload
