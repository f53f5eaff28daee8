"""Submission: the rules a request must keep, its fingerprint, and the job it becomes."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vesper.domain.errors import InvalidRequest
from vesper.domain.states import Status
from vesper.domain.submission import JobRequest, Limits, NewJob, fingerprint, prepare

from .builders import T0, new_id

SMALL = Limits(max_payload_bytes=32, max_retries=10)


def prepare_with(limits: Limits = SMALL, default_max_retries: int = 3, **fields: Any) -> NewJob:
    request = JobRequest(**{"type": "email", **fields})
    return prepare(request, job_id=new_id(), limits=limits, default_max_retries=default_max_retries)


def case(field: str, **fields: Any) -> Any:
    label = ",".join(f"{k}={v!r}"[:40] for k, v in fields.items())
    return pytest.param(field, fields, id=f"{field}:{label}")


INVALID = [
    # type
    case("type", type=""),
    case("type", type="x" * 201),
    case("type", type=42),
    case("type", type=None),
    case("type", type="a\nb"),
    case("type", type="tab\there"),
    case("type", type="nul\x00"),
    case("type", type="del\x7f"),
    case("type", type="next-line\x85"),
    case("type", type=" "),
    case("type", type="\u3000\u00a0 "),  # ideographic and no-break spaces
    case("type", type="lone\ud800"),
    case("type", type="\udfff"),
    # priority
    case("priority", priority=-1),
    case("priority", priority=11),
    case("priority", priority="5"),
    case("priority", priority=5.5),
    case("priority", priority=5.0),
    case("priority", priority=True),
    case("priority", priority=None),
    # payload
    case("payload", payload=[1, 2]),
    case("payload", payload=None),
    case("payload", payload="{}"),
    case("payload", payload={"s": {1, 2}}),
    case("payload", payload={"n": math.nan}),
    case("payload", payload={"n": math.inf}),
    case("payload", payload={"when": T0}),
    case("payload", payload={(1, 2): "tuple key"}),
    case("payload", payload={"big": "x" * 32}),
    case("payload", payload={"s": "\ud800"}),  # flat
    case("payload", payload={"\udc00": 1}),
    case("payload", payload={"s": "\ude00\ud83d"}),  # a pair in the wrong order
    case("payload", payload={"a": ["\ud83d"]}),  # nested
    # max_retries
    case("max_retries", max_retries=-1),
    case("max_retries", max_retries=11),
    case("max_retries", max_retries=True),
    case("max_retries", max_retries="3"),
    case("max_retries", max_retries=2.0),
    # run_at / delay
    case("run_at", run_at=datetime(2030, 1, 1)),
    case("run_at", run_at="2030-01-01T00:00:00Z"),
    case("run_at", run_at=T0, delay=timedelta(seconds=1)),
    case("run_at", run_at=T0, delay=timedelta(0)),
    case("run_at", run_at=datetime(1, 1, 1, tzinfo=UTC)),
    case("run_at", run_at=datetime(1999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)),
    case("run_at", run_at=datetime(1999, 12, 31, 0, 30, tzinfo=timezone(timedelta(hours=1)))),
    case("delay_seconds", delay=timedelta(seconds=-1)),
    case("delay_seconds", delay=timedelta(microseconds=-1)),
    case("delay_seconds", delay=timedelta(days=3651)),
    # timeout
    case("timeout", timeout=timedelta(0)),
    case("timeout", timeout=timedelta(seconds=-5)),
    case("timeout", timeout=timedelta(days=8)),
    # idempotency key
    case("Idempotency-Key", idempotency_key=""),
    case("Idempotency-Key", idempotency_key="k" * 256),
    case("Idempotency-Key", idempotency_key="a\nb"),
    case("Idempotency-Key", idempotency_key="tab\tkey"),
    case("Idempotency-Key", idempotency_key="del\x7f"),
    case("Idempotency-Key", idempotency_key="clé"),
    case("Idempotency-Key", idempotency_key=123),
]


@pytest.mark.parametrize(("field", "fields"), INVALID)
def test_invalid_request_names_the_field(field: str, fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as raised:
        prepare_with(**fields)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")


VALID = [
    pytest.param({"type": "x" * 200}, id="type-200-chars"),
    pytest.param({"type": "résumé.render ✓"}, id="type-unicode"),
    pytest.param({"type": " padded "}, id="type-not-only-spaces"),
    pytest.param({"priority": 0}, id="priority-0"),
    pytest.param({"priority": 10}, id="priority-10"),
    pytest.param({"payload": {}}, id="payload-empty"),
    pytest.param({"payload": {"s": "x" * 24}}, id="payload-at-limit"),
    pytest.param({"payload": {"a": [1, None, True, {"b": 1.5}]}}, id="payload-nested"),
    pytest.param({"payload": {"e": "\U0001f600"}}, id="payload-emoji"),  # a surrogate pair
    pytest.param({"payload": {"a": ["\U0001f600"]}}, id="payload-nested-emoji"),
    pytest.param({"payload": {"s": "\\ud800"}}, id="payload-escaped-backslash-u"),
    pytest.param({"max_retries": 0}, id="max-retries-0"),
    pytest.param({"max_retries": 10}, id="max-retries-at-limit"),
    pytest.param(
        {"run_at": datetime(2030, 1, 1, 5, tzinfo=timezone(timedelta(hours=5)))}, id="run-at-offset"
    ),
    pytest.param({"run_at": datetime(2000, 1, 1, tzinfo=UTC)}, id="run-at-2000-utc"),
    # the year 2000 as written in the most positive offset: 1999-12-31T00:01Z
    pytest.param(
        {"run_at": datetime(2000, 1, 1, tzinfo=timezone(timedelta(hours=23, minutes=59)))},
        id="run-at-earliest-year-2000-in-any-offset",
    ),
    pytest.param({"delay": timedelta(0)}, id="delay-0"),
    pytest.param({"delay": timedelta(days=3650)}, id="delay-at-limit"),
    pytest.param({"timeout": timedelta(microseconds=1)}, id="timeout-tiny"),
    pytest.param({"timeout": timedelta(days=7)}, id="timeout-at-limit"),
    pytest.param({"idempotency_key": "k" * 255}, id="key-255-chars"),
    pytest.param({"idempotency_key": " ~!"}, id="key-printable-edges"),
]


@pytest.mark.parametrize("fields", VALID)
def test_valid_request_is_accepted_as_given(fields: dict[str, Any]) -> None:
    new = prepare_with(**fields)
    for name, value in fields.items():
        stored = new.delay if name == "delay" else getattr(new, name)
        assert stored == value


def test_payload_json_size_counts_utf8_bytes() -> None:
    # '{"s":"éé"}' is 10 characters but 12 bytes
    limits = Limits(max_payload_bytes=11)
    prepare_with(limits=limits, payload={"s": "ab"})
    with pytest.raises(InvalidRequest, match="payload"):
        prepare_with(limits=limits, payload={"s": "éé"})


def test_payload_with_non_string_keys_is_stored_as_json_would_read_it() -> None:
    new = prepare_with(limits=Limits(), payload={1: "a", "b": {2: None}})
    assert new.payload == {"1": "a", "b": {"2": None}}


def test_deeply_nested_payload_is_rejected_not_crashing() -> None:
    payload: dict[str, Any] = {}
    inner = payload
    for _ in range(100_000):
        inner["x"] = {}
        inner = inner["x"]
    with pytest.raises(InvalidRequest) as raised:
        prepare_with(limits=Limits(), payload=payload)
    assert raised.value.field == "payload"


def test_default_max_retries_applies_when_not_given() -> None:
    assert prepare_with(default_max_retries=7).max_retries == 7
    assert prepare_with(default_max_retries=7, max_retries=0).max_retries == 0


def test_delay_defaults_to_zero_and_run_at_to_none() -> None:
    new = prepare_with()
    assert (new.run_at, new.delay) == (None, timedelta(0))


def test_first_bad_field_in_rule_order_is_named() -> None:
    with pytest.raises(InvalidRequest) as raised:
        prepare_with(type="", priority=99, payload=None)
    assert raised.value.field == "type"


# -- the payload is the job's own ------------------------------------------------------


def test_mutating_the_callers_payload_after_prepare_changes_nothing() -> None:
    payload: dict[str, Any] = {"to": ["a@example.com"], "meta": {"n": 1}}
    new = prepare_with(limits=Limits(), payload=payload)
    payload["to"].append("b@example.com")
    payload["meta"]["n"] = 2
    payload["extra"] = True
    assert new.payload == {"to": ["a@example.com"], "meta": {"n": 1}}


def test_materialized_jobs_do_not_share_the_payload() -> None:
    new = prepare_with(limits=Limits(), payload={"n": 1})
    first = new.materialize(now=T0, seq=1)
    second = new.materialize(now=T0, seq=2)
    first.payload["n"] = 2  # type: ignore[index]
    assert second.payload == {"n": 1}
    assert new.payload == {"n": 1}


class _DictSubclass(dict[Any, Any]):
    """Not exactly a dict: `prepare` checks it on the general path (walk, encode, parse)."""


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities included: both paths must refuse them alike
    st.text(),  # lone surrogates included
)
_flat_payloads = st.dictionaries(st.text(), _scalars, max_size=8)


def _outcome(payload: Any, limits: Limits) -> Any:
    try:
        new = prepare_with(limits=limits, payload=payload)
    except InvalidRequest as exc:
        return ("rejected", exc.field, exc.message)
    items = [(k, type(v), v) for k, v in new.payload.items()]  # NaN never gets this far
    return (items, new.payload_json)


@given(_flat_payloads, st.integers(0, 3), st.integers(2, 200))
def test_a_flat_payload_is_checked_and_copied_as_the_general_path_does(
    payload: dict[str, Any], max_depth: int, max_bytes: int
) -> None:
    limits = Limits(max_depth=max_depth, max_payload_bytes=max_bytes)
    assert _outcome(payload, limits) == _outcome(_DictSubclass(payload), limits)


def test_mutating_the_callers_flat_payload_after_prepare_changes_nothing() -> None:
    payload: dict[str, Any] = {"n": 1, "s": "x"}
    new = prepare_with(limits=Limits(), payload=payload)
    payload["n"] = 2
    payload["extra"] = True
    assert new.payload == {"n": 1, "s": "x"}


# -- fingerprint ------------------------------------------------------------------------

BASE = JobRequest(
    type="email",
    payload={"to": "a@example.com", "n": [1, 2]},
    priority=3,
    max_retries=2,
    run_at=T0,
    timeout=timedelta(seconds=30),
    idempotency_key="k0",  # only a keyed job is fingerprinted
)


def fp(request: JobRequest) -> str:
    return prepare(request, job_id=new_id(), limits=Limits(), default_max_retries=3).fingerprint


def test_fingerprint_is_stable() -> None:
    again = JobRequest(
        type="email",
        payload={"n": [1, 2], "to": "a@example.com"},  # another key order
        priority=3,
        max_retries=2,
        run_at=T0,
        timeout=timedelta(seconds=30),
        idempotency_key="k0",
    )
    assert fp(BASE) == fp(BASE) == fp(again)
    assert fp(BASE) == fingerprint(BASE, max_retries=2)
    assert len(fp(BASE)) == 64


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"type": "sms"}, id="type"),
        pytest.param({"priority": 4}, id="priority"),
        pytest.param({"payload": {"to": "b@example.com", "n": [1, 2]}}, id="payload-value"),
        pytest.param({"payload": {"to": "a@example.com", "n": [2, 1]}}, id="payload-order"),
        pytest.param({"payload": {"to": "a@example.com"}}, id="payload-key"),
        pytest.param({"max_retries": 3}, id="max_retries"),
        pytest.param({"run_at": T0 + timedelta(microseconds=1)}, id="run_at"),
        pytest.param({"run_at": None, "delay": timedelta(seconds=5)}, id="delay"),
        pytest.param({"timeout": timedelta(seconds=31)}, id="timeout"),
        pytest.param({"timeout": None}, id="no-timeout"),
    ],
)
def test_fingerprint_changes_with_each_field(change: dict[str, Any]) -> None:
    assert fp(attrs.evolve(BASE, **change)) != fp(BASE)


def test_fingerprint_ignores_the_key_and_the_trace_context() -> None:
    keyed = attrs.evolve(BASE, idempotency_key="k1", trace_context="00-abc-def-01")
    assert fp(keyed) == fp(BASE)


def test_a_job_without_a_key_has_no_fingerprint() -> None:
    # nothing is ever compared with it: a replay needs a key
    assert fp(attrs.evolve(BASE, idempotency_key=None)) == ""


def test_fingerprint_uses_the_effective_max_retries() -> None:
    implicit = attrs.evolve(BASE, max_retries=None)
    explicit = attrs.evolve(BASE, max_retries=3)
    assert fp(implicit) == fp(explicit)


def test_delays_differing_by_a_microsecond_differ() -> None:
    one = attrs.evolve(BASE, run_at=None, delay=timedelta(seconds=1))
    other = attrs.evolve(BASE, run_at=None, delay=timedelta(seconds=1, microseconds=1))
    assert fp(one) != fp(other)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(payload=st.dictionaries(st.text(), JSON, max_size=5))
def test_any_json_object_is_accepted_and_fingerprinted_stably(payload: dict[str, Any]) -> None:
    request = JobRequest(type="t", payload=payload, idempotency_key="k")
    new = prepare(request, job_id=new_id(), limits=Limits(), default_max_retries=3)
    assert new.payload == payload
    assert len(new.fingerprint) == 64
    assert new.fingerprint == fp(JobRequest(type="t", payload=dict(payload), idempotency_key="k"))


# -- materialize ------------------------------------------------------------------------


def test_materialize_with_a_delay_is_due_at_now_plus_delay() -> None:
    new = prepare_with(delay=timedelta(seconds=90), priority=4, max_retries=5)
    job = new.materialize(now=T0, seq=17)
    assert job.id == new.id
    assert job.run_at == T0 + timedelta(seconds=90)
    assert (job.status, job.retries, job.attempts, job.error) == (Status.PENDING, 0, 0, "")
    assert (job.priority, job.max_retries, job.seq) == (4, 5, 17)
    assert job.created_at == job.updated_at == T0
    assert job.lease is None
    assert (job.started_at, job.finished_at) == (None, None)
    assert job.fingerprint == new.fingerprint


def test_materialize_with_run_at_keeps_it() -> None:
    at = datetime(2031, 6, 1, 12, tzinfo=UTC)
    new = prepare_with(
        run_at=at,
        idempotency_key="key-1",
        timeout=timedelta(seconds=5),
        trace_context="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    job = new.materialize(now=T0, seq=1)
    assert job.run_at == at
    assert job.idempotency_key == "key-1"
    assert job.timeout == timedelta(seconds=5)
    assert job.trace_context == new.trace_context
    assert not job.is_due(T0)
    assert job.is_due(at)


def test_run_at_with_an_offset_is_stored_in_utc() -> None:
    at = datetime(2030, 1, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    new = prepare_with(run_at=at)
    assert new.run_at == T0
    assert new.run_at is not None
    assert new.run_at.utcoffset() == timedelta(0)
    assert new.materialize(now=T0, seq=1).run_at.tzinfo is UTC
