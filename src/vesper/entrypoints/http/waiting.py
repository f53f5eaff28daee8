"""`?wait=` on GET /jobs/{id}: how long a request may wait for its job to finish."""

from __future__ import annotations

from urllib.parse import parse_qs

from vesper.application.waiting import MAX_WAIT_S
from vesper.domain.errors import InvalidRequest
from vesper.entrypoints.settings import parse_duration


def wait_seconds(text: str) -> float:
    """A Go duration ("30s", "500ms") or a number of seconds, 0 to 60 s.

    Raises:
        InvalidRequest: anything else (the field `wait`).
    """
    try:
        seconds = parse_duration(text).total_seconds()
    except (ValueError, OverflowError):
        raise InvalidRequest("wait", "must be a duration such as 30s or 500ms") from None
    if not 0 <= seconds <= MAX_WAIT_S:
        raise InvalidRequest("wait", f"must be at most {MAX_WAIT_S:g}s")
    return seconds


def requested_wait(query_string: bytes) -> float:
    """The wait a request's query asks for (0 when none or invalid: the handler answers
    an invalid one with a 400 at once): the time its response may take on top of
    HTTP_WRITE_TIMEOUT."""
    if b"wait=" not in query_string:
        return 0.0
    values = parse_qs(query_string.decode("latin-1")).get("wait")
    if not values:
        return 0.0
    try:
        return wait_seconds(values[0])
    except InvalidRequest:
        return 0.0
