"""What a producer asks for, the rules it must keep, and the job it becomes."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from vesper.domain.errors import InvalidRequest
from vesper.domain.job import JobId, JobRecord, UniqueSlot, unique_slot
from vesper.domain.queues import DEFAULT_QUEUE, check_concurrency_key, check_queue
from vesper.domain.results import DEFAULT_MAX_RESULT
from vesper.domain.states import Status

MIN_PRIORITY = 0
MAX_PRIORITY = 10
# A run_at before it is a mistake (year 1 from a zero value, a swapped field), and it
# would sort before every job due now: refused rather than jumping the queue.
# A run_at from the year 2000 on, as written in any offset: the earliest such instant is
# 2000-01-01T00:00+23:59, so the bound is a day before 2000-01-01Z. (Bounded at all
# because a run_at in year 1 would jump every queue.)
EARLIEST_RUN_AT = datetime(1999, 12, 31, tzinfo=UTC)

# built once: json.dumps with options builds an encoder per call, a cost per job
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
_PAYLOAD = {
    sort: json.JSONEncoder(allow_nan=False, separators=(",", ":"), sort_keys=sort)
    for sort in (False, True)
}


@attrs.frozen(kw_only=True)
class Limits:
    """Bounds on what one request may carry."""

    max_payload_bytes: int = 1024 * 1024
    max_type_length: int = 200
    max_retries: int = 1000
    max_batch: int = 1000
    max_key_length: int = 255
    max_depth: int = 128  # nesting of the payload: deeper JSON overflows decoders' stacks
    max_error_length: int = 4000
    max_delay: timedelta = timedelta(days=3650)
    max_timeout: timedelta = timedelta(days=7)
    max_result_bytes: int = DEFAULT_MAX_RESULT  # a consumer's return value, as JSON


@attrs.frozen(kw_only=True)
class JobRequest:
    """A producer's request for one job, before validation."""

    type: str
    payload: Mapping[str, Any] = attrs.field(factory=dict)
    priority: int = 0
    max_retries: int | None = None  # None: the queue's default
    run_at: datetime | None = None  # absolute time; exclusive with delay
    delay: timedelta | None = None
    idempotency_key: str | None = None
    timeout: timedelta | None = None
    trace_context: str | None = None
    queue: str | None = None  # None: the queue of the type's consumer, else "default"
    concurrency_key: str | None = None
    # while a job of the same queue with it is active, return that job
    unique_key: str | None = None


@attrs.frozen(kw_only=True)
class NewJob:
    """A validated request, ready for a store to insert.

    Either `run_at` is set, or the store computes it as its own now + `delay`, so that
    the store's clock (the database's) decides when a job is due.
    """

    id: JobId
    type: str
    priority: int
    payload: Mapping[str, Any]
    max_retries: int
    run_at: datetime | None
    delay: timedelta
    idempotency_key: str | None
    fingerprint: str
    timeout: timedelta | None
    trace_context: str | None
    queue: str = DEFAULT_QUEUE
    concurrency_key: str | None = None
    # `payload` as compact, key-sorted, ASCII-escaped JSON text, when known: a store
    # may insert it as is instead of serialising the payload again
    payload_json: str | None = None
    unique_key: str | None = None

    @property
    def unique_slot(self) -> UniqueSlot | None:
        """The (queue, unique key) the job will hold: a job of the batch or an active
        one holding it is returned instead of inserting this one."""
        return unique_slot(self.queue, self.unique_key)

    def materialize(self, *, now: datetime, seq: int) -> JobRecord:
        """The job as stored at `now`, with insertion order `seq`."""
        return JobRecord(
            id=self.id,
            type=self.type,
            queue=self.queue,
            priority=self.priority,
            payload=dict(self.payload),
            status=Status.PENDING,
            max_retries=self.max_retries,
            run_at=self.run_at if self.run_at is not None else now + self.delay,
            idempotency_key=self.idempotency_key,
            concurrency_key=self.concurrency_key,
            fingerprint=self.fingerprint,
            timeout=self.timeout,
            trace_context=self.trace_context,
            created_at=now,
            updated_at=now,
            seq=seq,
            unique_key=self.unique_key,
        )


def prepare(
    request: JobRequest, *, job_id: JobId, limits: Limits, default_max_retries: int
) -> NewJob:
    """Validate `request` against `limits`; raise InvalidRequest naming the first bad field.

    A request without a queue goes to "default" (the submit use case names the queue
    of the type's consumer first, when it knows one)."""
    _check_type(request.type, limits)
    queue = DEFAULT_QUEUE if request.queue is None else check_queue(request.queue)
    check_concurrency_key(request.concurrency_key)
    _check_priority(request.priority)
    payload, payload_json = _check_payload(request.payload, limits)
    max_retries = default_max_retries if request.max_retries is None else request.max_retries
    if not _is_int(max_retries) or not 0 <= max_retries <= limits.max_retries:
        raise InvalidRequest("max_retries", f"must be an integer from 0 to {limits.max_retries}")
    if request.run_at is not None and request.delay is not None:
        raise InvalidRequest("run_at", "give run_at or delay_seconds, not both")
    if request.run_at is not None and (
        not isinstance(request.run_at, datetime) or request.run_at.utcoffset() is None
    ):
        raise InvalidRequest("run_at", "must be a date-time with a time zone (RFC 3339)")
    try:
        run_at = request.run_at.astimezone(UTC) if request.run_at is not None else None
    except OverflowError:
        raise InvalidRequest("run_at", "is out of range") from None
    if run_at is not None and run_at < EARLIEST_RUN_AT:
        raise InvalidRequest("run_at", "must be in the year 2000 or later")
    delay = request.delay if request.delay is not None else timedelta(0)
    if not timedelta(0) <= delay <= limits.max_delay:
        raise InvalidRequest(
            "delay_seconds", f"must be from 0 to {limits.max_delay.total_seconds():.0f}"
        )
    if request.timeout is not None and not timedelta(0) < request.timeout <= limits.max_timeout:
        raise InvalidRequest(
            "timeout", f"must be above 0 and at most {limits.max_timeout.total_seconds():g} seconds"
        )
    check_idempotency_key(request.idempotency_key, limits)
    check_key("unique_key", request.unique_key, limits)
    # Only a key's replay is compared with what it first asked for: a job without a key
    # has no fingerprint (its hash was a sixth of a batch's CPU). The fingerprint hashes
    # the validated copy: its keys are strings, as JSON makes them.
    if request.idempotency_key is None:
        print_ = ""
    elif payload_json is not None:
        print_ = _fingerprint_of(request, payload_json, max_retries=max_retries, queue=queue)
    else:
        print_ = fingerprint(
            attrs.evolve(request, payload=payload, queue=queue), max_retries=max_retries
        )
    return NewJob(
        id=job_id,
        type=request.type,
        priority=request.priority,
        payload=payload,
        max_retries=max_retries,
        run_at=run_at,
        delay=delay,
        idempotency_key=request.idempotency_key,
        fingerprint=print_,
        timeout=request.timeout,
        trace_context=request.trace_context,
        queue=queue,
        concurrency_key=request.concurrency_key,
        payload_json=payload_json,
        unique_key=request.unique_key,
    )


def check_idempotency_key(key: str | None, limits: Limits) -> None:
    check_key("Idempotency-Key", key, limits)


def check_key(field: str, key: str | None, limits: Limits) -> None:
    """An idempotency or unique key: 1 to max_key_length printable ASCII characters."""
    if key is None:
        return
    if not isinstance(key, str) or not 1 <= len(key) <= limits.max_key_length:
        raise InvalidRequest(field, f"must be 1 to {limits.max_key_length} characters")
    if not all(" " <= ch <= "~" for ch in key):
        raise InvalidRequest(field, "must be printable ASCII")


def fingerprint(request: JobRequest, *, max_retries: int) -> str:
    """A stable hash of what the producer asked for, to tell a replay from a conflict."""
    canonical = {
        "type": request.type,
        "priority": request.priority,
        "payload": request.payload,
        "max_retries": max_retries,
        "run_at": request.run_at.isoformat() if request.run_at else None,
        "delay": request.delay.total_seconds() if request.delay is not None else None,
        "timeout": request.timeout.total_seconds() if request.timeout is not None else None,
        **_routing(request.queue, request.concurrency_key),
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _routing(queue: str | None, concurrency_key: str | None) -> dict[str, str]:
    """The routing fields a fingerprint hashes: only those that differ from the
    defaults, so that the fingerprints of keys bound before queues existed still match."""
    fields = {}
    if queue is not None and queue != DEFAULT_QUEUE:
        fields["queue"] = queue
    if concurrency_key is not None:
        fields["concurrency_key"] = concurrency_key
    return fields


def _fingerprint_of(request: JobRequest, payload_json: str, *, max_retries: int, queue: str) -> str:
    """`fingerprint`, given the payload's key-sorted compact ASCII text: the same text,
    spliced together rather than serialised again (keys in sorted order:
    [concurrency_key], delay, max_retries, payload, priority, [queue], run_at, timeout,
    type)."""
    routing = _routing(queue, request.concurrency_key)
    head = _CANONICAL.encode(
        {
            "delay": request.delay.total_seconds() if request.delay is not None else None,
            "max_retries": max_retries,
            **{k: v for k, v in routing.items() if k == "concurrency_key"},
        }
    )
    tail = _CANONICAL.encode(
        {
            **{k: v for k, v in routing.items() if k == "queue"},
            "priority": request.priority,
            "run_at": request.run_at.isoformat() if request.run_at else None,
            "timeout": request.timeout.total_seconds() if request.timeout is not None else None,
            "type": request.type,
        }
    )
    text = f'{head[:-1]},"payload":{payload_json},{tail[1:]}'
    return hashlib.sha256(text.encode()).hexdigest()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# types already found free of control characters: a queue has few, and each job of a
# batch would scan its type again (bounded: a client inventing types fills it once)
_CLEAN_TYPES: set[str] = set()
_CLEAN_TYPES_MAX = 1024


def _check_type(job_type: object, limits: Limits) -> None:
    if not isinstance(job_type, str) or not 1 <= len(job_type) <= limits.max_type_length:
        raise InvalidRequest(
            "type", f"must be a string of 1 to {limits.max_type_length} characters"
        )
    if job_type in _CLEAN_TYPES:
        return
    if any(ch < " " or "\x7f" <= ch <= "\x9f" for ch in job_type):  # C0, DEL, C1
        raise InvalidRequest("type", "must not contain control characters")
    if job_type.isspace():
        raise InvalidRequest("type", "must not be blank")
    if not _is_unicode(job_type):
        raise InvalidRequest("type", _LONE_SURROGATE)
    if type(job_type) is str and len(_CLEAN_TYPES) < _CLEAN_TYPES_MAX:
        _CLEAN_TYPES.add(job_type)


def _check_priority(priority: object) -> None:
    if (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not (MIN_PRIORITY <= priority <= MAX_PRIORITY)
    ):
        raise InvalidRequest(
            "priority", f"must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}"
        )


def seconds(field: str, value: float | None) -> timedelta | None:
    """Seconds as a timedelta; `validate` checks the range, this only keeps it finite
    (timedelta raises ValueError on NaN and OverflowError on infinity)."""
    if value is None:
        return None
    try:
        if not math.isfinite(value):
            raise OverflowError
        return timedelta(seconds=value)
    except OverflowError:
        raise InvalidRequest(field, "is out of range") from None


def _check_payload(payload: object, limits: Limits) -> tuple[dict[str, Any], str | None]:
    """A private copy of `payload` (the caller's dict must not change a queued job), and
    its key-sorted compact JSON text when every key is a string (else None: sorting
    other keys would order them differently from the strings JSON makes of them)."""
    if not isinstance(payload, Mapping):
        raise InvalidRequest("payload", "must be a JSON object")
    if type(payload) is dict and _flat(payload):
        return _check_flat_payload(payload, limits)
    depth, str_keys = _depth(payload, limits.max_depth)
    if depth > limits.max_depth:
        raise InvalidRequest("payload", f"nests deeper than {limits.max_depth} levels")
    try:
        text = _PAYLOAD[str_keys].encode(payload)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidRequest("payload", f"is not JSON: {type(exc).__name__}") from None
    # ASCII text (ensure_ascii): its length is its size in bytes
    if len(text) > limits.max_payload_bytes:
        raise InvalidRequest("payload", f"is larger than {limits.max_payload_bytes} bytes")
    _check_payload_unicode(payload, text)
    copy: dict[str, Any] = json.loads(text)
    return copy, text if str_keys else None


# the types JSON gives back unchanged: a dict of these is its own JSON round trip
_SCALARS = frozenset({str, int, float, bool, type(None)})
_STR = frozenset({str})


def _flat(payload: dict[Any, Any]) -> bool:
    """Whether `payload` has string keys and scalar values only (the usual payload)."""
    return _STR.issuperset(map(type, payload)) and _SCALARS.issuperset(map(type, payload.values()))


def _check_flat_payload(payload: dict[str, Any], limits: Limits) -> tuple[dict[str, Any], str]:
    """`_check_payload` for a flat payload, without walking it or parsing its text back:
    its key-sorted shallow copy is what `json.loads` of its text would make (the values
    are immutable and round-trip exactly), and its depth is 1."""
    if limits.max_depth < 1:
        raise InvalidRequest("payload", f"nests deeper than {limits.max_depth} levels")
    try:
        text = _PAYLOAD[True].encode(payload)
    except ValueError as exc:  # NaN or infinity
        raise InvalidRequest("payload", f"is not JSON: {type(exc).__name__}") from None
    if len(text) > limits.max_payload_bytes:
        raise InvalidRequest("payload", f"is larger than {limits.max_payload_bytes} bytes")
    _check_payload_unicode(payload, text)
    return dict(sorted(payload.items())), text


_LONE_SURROGATE = "must be valid Unicode (it holds a lone surrogate, e.g. \\ud800)"
_UNICODE_TEXT = json.JSONEncoder(ensure_ascii=False, check_circular=False)


def _is_unicode(text: str) -> bool:
    """Whether `text` can be stored as UTF-8: a lone surrogate ("\\ud800", which JSON
    and Python allow) cannot, and a UTF-8 database refuses the job."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_payload_unicode(payload: object, ascii_text: str) -> None:
    """Refuse a payload with a lone surrogate in a key or a string.

    Its ASCII JSON text escapes every character outside ASCII: without a `\\ud` in it
    (a substring search: some ns per KiB) there is no surrogate at all. With one, a
    pair or a lone one, the payload is encoded again as UTF-8 (rare: emoji, say)."""
    if "\\ud" in ascii_text and not _is_unicode(_UNICODE_TEXT.encode(payload)):
        raise InvalidRequest("payload", _LONE_SURROGATE)


def _depth(value: object, limit: int) -> tuple[int, bool]:
    """Nesting depth of containers in `value`, counted iteratively up to limit + 1, and
    whether every mapping key met is a string."""
    deepest = 0
    str_keys = True
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            if str_keys and not all(type(key) is str for key in item):
                str_keys = False
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest, str_keys
        stack.extend((child, depth + 1) for child in children)
    return deepest, str_keys
