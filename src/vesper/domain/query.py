"""Listing jobs: filters and cursor pagination (newest first)."""

from __future__ import annotations

import attrs

from vesper.domain.errors import InvalidCursor, InvalidRequest
from vesper.domain.job import Job
from vesper.domain.states import Status

MAX_PAGE = 1000
_CURSOR_PREFIX = "s"


@attrs.frozen(kw_only=True)
class JobQuery:
    status: Status | None = None
    type: str | None = None
    priority: int | None = None
    limit: int = 100
    cursor: str | None = None  # from JobPage.next_cursor: jobs older than the last one seen

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE:
            raise InvalidRequest("limit", f"must be from 1 to {MAX_PAGE}")
        if self.priority is not None and not 0 <= self.priority <= 10:
            raise InvalidRequest("priority", "must be an integer from 0 to 10")
        if self.cursor is not None:
            decode_cursor(self.cursor)

    @property
    def before_seq(self) -> int | None:
        return decode_cursor(self.cursor) if self.cursor is not None else None


@attrs.frozen(kw_only=True)
class JobPage:
    jobs: tuple[Job, ...]
    next_cursor: str | None  # None on the last page


def encode_cursor(seq: int) -> str:
    return f"{_CURSOR_PREFIX}{seq}"


def decode_cursor(cursor: str) -> int:
    digits = cursor[len(_CURSOR_PREFIX) :]
    if not cursor.startswith(_CURSOR_PREFIX) or not digits.isascii() or not digits.isdigit():
        raise InvalidCursor(cursor)
    if len(digits) > 19 or int(digits) > 2**63 - 1:  # stores keep seq in a signed bigint
        raise InvalidCursor(cursor)
    return int(digits)


def page_of(jobs: list[Job], limit: int) -> JobPage:
    """Cut a newest-first list fetched with limit + 1 rows into a page."""
    if len(jobs) > limit:
        return JobPage(jobs=tuple(jobs[:limit]), next_cursor=encode_cursor(jobs[limit - 1].seq))
    return JobPage(jobs=tuple(jobs), next_cursor=None)
