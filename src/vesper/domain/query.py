"""Listing jobs: filters and cursor pagination (newest first)."""

from __future__ import annotations

import hashlib
import re
from uuid import UUID

import attrs

from vesper.domain.errors import InvalidCursor, InvalidRequest
from vesper.domain.job import JobRecord
from vesper.domain.queues import check_queue
from vesper.domain.states import Status

MAX_PAGE = 1000
# A cursor is "s<seq>.<check>": the seq in canonical decimal, then 8 hex digits of a
# hash of those digits. Decoding accepts exactly what encode_cursor produces (strict
# structure) and checks the checksum, so a forged, edited or truncated cursor is an
# error rather than a silently different page. A checksum, not a signature: a signature
# needs a key, and a key per deployment would break cursors across API processes and
# restarts. The seq is not a secret (jobs' order is visible): nothing is to be hidden.
_CURSOR = re.compile(r"s(0|[1-9][0-9]{0,18})\.([0-9a-f]{8})")
_MAX_SEQ = 2**63 - 1  # stores keep seq in a signed bigint


@attrs.frozen(kw_only=True)
class JobQuery:
    status: Status | None = None
    type: str | None = None
    priority: int | None = None
    queue: str | None = None
    limit: int = 100
    cursor: str | None = None  # from JobPage.next_cursor: jobs older than the last one seen
    # the dashboard's search: a whole job id (any UUID spelling), or any part of an
    # idempotency key (exact characters, case included)
    search: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.search is not None and (not self.search or "\x00" in self.search):
            raise InvalidRequest("search", "must be non-empty text without NUL")
        if not 1 <= self.limit <= MAX_PAGE:
            raise InvalidRequest("limit", f"must be from 1 to {MAX_PAGE}")
        if self.priority is not None and not 0 <= self.priority <= 10:
            raise InvalidRequest("priority", "must be an integer from 0 to 10")
        if self.queue is not None:
            check_queue(self.queue)
        if self.cursor is not None:
            decode_cursor(self.cursor)

    @property
    def before_seq(self) -> int | None:
        return decode_cursor(self.cursor) if self.cursor is not None else None

    @property
    def search_id(self) -> UUID | None:
        """The search text as a job id, when it spells one."""
        if self.search is None:
            return None
        try:
            return UUID(self.search.strip())
        except ValueError:
            return None

    def matches_search(self, job: JobRecord) -> bool:
        """Whether `job` matches `search` (True without one): the stores' semantics."""
        if self.search is None:
            return True
        if job.id == self.search_id:
            return True
        return job.idempotency_key is not None and self.search in job.idempotency_key


@attrs.frozen(kw_only=True)
class JobPage:
    jobs: tuple[JobRecord, ...]
    next_cursor: str | None  # None on the last page


def encode_cursor(seq: int) -> str:
    digits = str(seq)
    return f"s{digits}.{_checksum(digits)}"


def decode_cursor(cursor: str) -> int:
    match = _CURSOR.fullmatch(cursor)
    if match is None or match.group(2) != _checksum(match.group(1)):
        raise InvalidCursor(cursor)
    seq = int(match.group(1))
    if seq > _MAX_SEQ:
        raise InvalidCursor(cursor)
    return seq


def _checksum(digits: str) -> str:
    return hashlib.blake2s(digits.encode(), digest_size=4, person=b"vcursor1").hexdigest()


def page_of(jobs: list[JobRecord], limit: int) -> JobPage:
    """Cut a newest-first list fetched with limit + 1 rows into a page."""
    if len(jobs) > limit:
        return JobPage(jobs=tuple(jobs[:limit]), next_cursor=encode_cursor(jobs[limit - 1].seq))
    return JobPage(jobs=tuple(jobs), next_cursor=None)
