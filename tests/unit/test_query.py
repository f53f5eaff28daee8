"""Listing: query validation, cursors and pages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vesper.domain.errors import InvalidCursor, InvalidRequest
from vesper.domain.query import MAX_PAGE, JobQuery, decode_cursor, encode_cursor, page_of
from vesper.domain.states import Status

from .builders import make_job


@given(seq=st.integers(0, 2**63 - 1))
def test_cursor_round_trips(seq: int) -> None:
    cursor = encode_cursor(seq)
    assert decode_cursor(cursor) == seq
    assert JobQuery(cursor=cursor).before_seq == seq


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "s",
        "x12",
        "S12",
        " s12",
        "s12 ",
        "s-1",
        "s+1",
        "s1.5",
        "s1e3",
        "s\u0661\u0662",
        "s\u00b2",
        "s" + "9" * 20,
        "s12",  # the structure of the past: forged now
        "s12.00000000",  # a wrong checksum
        encode_cursor(12).upper(),
        encode_cursor(12)[:-1],  # truncated
        encode_cursor(12) + "0",
        encode_cursor(12).replace("s12.", "s13."),  # an edited seq
        encode_cursor(12).replace("s12.", "s012."),  # not canonical
        encode_cursor(12) + "\n",
    ],
)
def test_bad_cursor_raises_invalid_cursor(cursor: str) -> None:
    with pytest.raises(InvalidCursor) as raised:
        decode_cursor(cursor)
    assert raised.value.field == "cursor"
    with pytest.raises(InvalidCursor):
        JobQuery(cursor=cursor)


@given(text=st.text(max_size=30))
def test_decode_cursor_accepts_only_what_encode_could_produce(text: str) -> None:
    try:
        seq = decode_cursor(text)
    except InvalidCursor:
        return
    assert encode_cursor(seq) == text


def test_invalid_cursor_message_is_truncated() -> None:
    with pytest.raises(InvalidCursor) as raised:
        decode_cursor("x" * 1000)
    assert len(str(raised.value)) < 120


@pytest.mark.parametrize(
    ("field", "fields"),
    [
        ("limit", {"limit": 0}),
        ("limit", {"limit": MAX_PAGE + 1}),
        ("limit", {"limit": -5}),
        ("priority", {"priority": -1}),
        ("priority", {"priority": 11}),
    ],
)
def test_bad_query_names_the_field(field: str, fields: dict[str, int]) -> None:
    with pytest.raises(InvalidRequest) as raised:
        JobQuery(**fields)  # type: ignore[arg-type]
    assert raised.value.field == field


def test_query_defaults() -> None:
    query = JobQuery(status=Status.DLQ, type="email", priority=0, limit=MAX_PAGE)
    assert query.before_seq is None
    assert JobQuery().limit == 100


def test_page_of_more_rows_than_limit_has_a_cursor_after_the_last_kept() -> None:
    jobs = [make_job(seq=s) for s in (9, 7, 4, 2)]  # newest first, limit + 1 rows
    page = page_of(jobs, 3)
    assert page.jobs == tuple(jobs[:3])
    assert page.next_cursor == encode_cursor(4)


@pytest.mark.parametrize("rows", [0, 1, 3])
def test_page_of_at_most_limit_rows_is_the_last_page(rows: int) -> None:
    jobs = [make_job(seq=s) for s in range(rows, 0, -1)]
    page = page_of(jobs, 3)
    assert page.jobs == tuple(jobs)
    assert page.next_cursor is None


def test_cursor_past_a_signed_bigint_is_invalid() -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(encode_cursor(2**63))
