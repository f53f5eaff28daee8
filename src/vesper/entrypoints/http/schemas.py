"""The HTTP API's request and response shapes, as msgspec Structs.

Request bodies are decoded strictly (see `body.py`): unknown fields are rejected, and
no value is coerced (`"5"`, `5.5` and `true` are not a priority). The bounds shown in
the OpenAPI document (`extra_json_schema`) are documentation only: the domain's
`prepare` enforces them, so that one place owns every limit and names the field.

Responses are built from `vesper.entrypoints.wire`, the JSON shape the CLI shares, and
converted into these Structs so that the OpenAPI document shows every body.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from vesper.application.periodic import ScheduleView
from vesper.application.queues import QueueView
from vesper.domain.bulk import BulkFilter
from vesper.domain.errors import InvalidRequest
from vesper.domain.fleet import Fleet
from vesper.domain.job import JobRecord
from vesper.domain.query import JobPage
from vesper.domain.queues import (
    MAX_CONCURRENCY_KEY,
    MAX_QUEUE_LENGTH,
    QUEUE_PATTERN,
    QueueChange,
)
from vesper.domain.states import Status
from vesper.domain.stats import QueueStats
from vesper.domain.submission import MAX_PRIORITY, MIN_PRIORITY, JobRequest, Limits, seconds
from vesper.entrypoints.wire import (
    fleet_to_wire,
    queue_to_wire,
    schedule_to_wire,
    stats_to_wire,
)

# Documented bounds; the domain enforces the configured ones (only the body size varies).
DOCUMENTED_LIMITS = Limits()
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f-\x9f]*$"  # C0, DEL, C1: as the domain
# ... and not only white space
JOB_TYPE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"


def _doc(description: str, **bounds: Any) -> Meta:
    return Meta(extra_json_schema={"description": description, "extra": bounds or None})


JobType = Annotated[
    str,
    _doc(
        "Routes the job to a consumer.",
        min_length=1,
        max_length=DOCUMENTED_LIMITS.max_type_length,
        pattern=JOB_TYPE_PATTERN,
    ),
]
Priority = Annotated[
    int, _doc("0-10, higher runs first.", minimum=MIN_PRIORITY, maximum=MAX_PRIORITY)
]
Payload = Annotated[dict[str, Any], _doc("Any JSON object, 1 MiB at most by default.")]
MaxRetries = Annotated[
    int,
    _doc(
        "Failed attempts retried before dlq; the server's default when absent.",
        minimum=0,
        maximum=DOCUMENTED_LIMITS.max_retries,
    ),
]
RunAt = Annotated[
    datetime,
    _doc(
        "RFC 3339 date-time with an offset; not claimable before it. The year 2000 or later.",
        pattern=r"^[2-9][0-9]{3}-",  # the year as written; the domain bounds the instant
    ),
]
DelaySeconds = Annotated[
    float,
    _doc(
        "Not claimable before now + this many seconds (exclusive with run_at).",
        minimum=0,
        maximum=DOCUMENTED_LIMITS.max_delay.total_seconds(),
    ),
]
TimeoutSeconds = Annotated[
    float,
    _doc(
        "Time limit of one attempt, in seconds (1 microsecond at least).",
        minimum=1e-6,  # timedelta's resolution: a smaller value rounds to no limit at all
        maximum=DOCUMENTED_LIMITS.max_timeout.total_seconds(),
    ),
]
QueueName = Annotated[
    str,
    _doc(
        "The queue: 1-64 of A-Z a-z 0-9 _ . -. When absent, the queue its type's consumer "
        'declares (if this process has it), else "default".',
        min_length=1,
        max_length=MAX_QUEUE_LENGTH,
        pattern=QUEUE_PATTERN,
    ),
]
ConcurrencyKey = Annotated[
    str,
    _doc(
        "Groups jobs for the queue's key_concurrency (e.g. a tenant id).",
        min_length=1,
        max_length=MAX_CONCURRENCY_KEY,
        pattern=NO_CONTROL_CHARACTERS,
    ),
]
IdempotencyKey = Annotated[
    str,
    _doc(
        "Binds the job: a replay with the same body returns it; another body is a 422.",
        min_length=1,
        max_length=DOCUMENTED_LIMITS.max_key_length,
        pattern=r"^[\x20-\x7e]+$",
    ),
]

UniqueKey = Annotated[
    str,
    _doc(
        "While a pending, failed or processing job of the same queue has this key, a "
        "submission with it returns that job (200) instead of inserting one; free again "
        "once it finished. Per queue: a job of another queue with the key does not count.",
        min_length=1,
        max_length=DOCUMENTED_LIMITS.max_key_length,
        pattern=r"^[\x20-\x7e]+$",
    ),
]


class SubmitJobIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A job to submit (the body of POST /jobs)."""

    type: JobType
    priority: Priority = 0
    payload: Payload = msgspec.field(default_factory=dict)
    max_retries: MaxRetries | None = None
    run_at: RunAt | None = None
    delay_seconds: DelaySeconds | None = None
    timeout_seconds: TimeoutSeconds | None = None
    queue: QueueName | None = None
    concurrency_key: ConcurrencyKey | None = None
    unique_key: UniqueKey | None = None

    def to_request(self, *, idempotency_key: str | None = None) -> JobRequest:
        """The domain's request; `prepare` validates it."""
        return JobRequest(
            type=self.type,
            payload=self.payload,
            priority=self.priority,
            max_retries=self.max_retries,
            run_at=_utc("run_at", self.run_at),
            delay=seconds("delay_seconds", self.delay_seconds),
            idempotency_key=idempotency_key,
            timeout=seconds("timeout_seconds", self.timeout_seconds),
            queue=self.queue,
            concurrency_key=self.concurrency_key,
            unique_key=self.unique_key,
        )


class BatchJobIn(SubmitJobIn, forbid_unknown_fields=True, kw_only=True):
    """One job of a batch; a batch carries idempotency keys per job, not in a header."""

    idempotency_key: IdempotencyKey | None = None


class SubmitBatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """The body of POST /jobs/batch: inserted whole or not at all."""

    jobs: Annotated[
        list[BatchJobIn],
        _doc(
            "The jobs, in insertion order.",
            min_items=1,
            max_items=DOCUMENTED_LIMITS.max_batch,
        ),
    ]

    def to_requests(self) -> list[JobRequest]:
        requests = []
        for index, job in enumerate(self.jobs):
            try:
                requests.append(job.to_request(idempotency_key=job.idempotency_key))
            except InvalidRequest as exc:
                raise InvalidRequest(f"jobs[{index}].{exc.field}", exc.message) from None
        return requests


class JobOut(msgspec.Struct, kw_only=True):
    """A job as the API shows it (the original service's names come first)."""

    job_id: str
    type: str
    queue: str
    priority: int
    payload: dict[str, Any]
    status: str
    retries: int
    attempts: int
    max_retries: int
    error: str
    run_at: datetime
    idempotency_key: str | None
    concurrency_key: str | None
    timeout_seconds: float | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker_id: str | None
    lease_expires_at: datetime | None
    result: Any = None  # the consumer's return value (JSON); null when it returned none
    cancel_requested_at: datetime | None = None  # a cancel of the running job, pending
    snoozes: int = 0
    unique_key: str | None = None


class JobsOut(msgspec.Struct, kw_only=True):
    """The jobs of a batch."""

    jobs: list[JobOut]


class JobPageOut(msgspec.Struct, kw_only=True):
    """A page of jobs, newest first; pass next_cursor as `cursor` for the next page."""

    jobs: list[JobOut]
    next_cursor: str | None


class MachineOut(msgspec.Struct, kw_only=True):
    machine: str
    processes: int
    workers: int


class WorkerOut(msgspec.Struct, kw_only=True):
    worker_id: str
    machine: str
    pid: int
    concurrency: int
    started_at: datetime
    last_heartbeat: datetime
    queues: dict[str, int] | None  # slots per queue served; null: one pool for every queue
    types: list[str] | None  # the job types it claims; null: every type


class FleetOut(msgspec.Struct, kw_only=True):
    """The live worker processes; total_workers sums their concurrency."""

    total_workers: int
    total_processes: int
    machines: list[MachineOut]
    workers: list[WorkerOut]


class StatsOut(msgspec.Struct, kw_only=True):
    """Job counts by status and by priority, and the age of the oldest due job."""

    total: int
    by_status: dict[str, int]
    by_priority: dict[str, int]
    oldest_pending_age_seconds: float


# what the domain accepts, as documentation for clients and fuzzers (it still validates)
RATE_PATTERN = r"^([1-9][0-9]{0,3}|10000)/(([1-9][0-9]{0,2})?(ms|s|m)|([1-9]|1[0-9]|2[0-4])?h)$"
AGING_PATTERN = r"^([1-9][0-9]{0,5}(ms|s)|[1-9][0-9]{0,4}m|[1-9][0-9]{0,2}h)$"


class QueueOut(msgspec.Struct, kw_only=True):
    """One queue: its jobs by status, its settings, and what no live worker serves."""

    name: str
    by_status: dict[str, int]
    oldest_pending_age_seconds: float
    paused: bool
    concurrency: int | None
    rate: str | None
    key_concurrency: int | None
    aging: str | None
    unserved_types: list[str]


class QueuesOut(msgspec.Struct, kw_only=True):
    """Every queue that holds jobs or settings, by name."""

    queues: list[QueueOut]


class QueuePatchIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Changes to a queue's settings: a field left out is unchanged, null clears it."""

    paused: (
        Annotated[bool, _doc("Claim nothing from the queue while true.")] | msgspec.UnsetType
    ) = msgspec.UNSET
    concurrency: (
        Annotated[
            int | None,
            _doc("Jobs of the queue processing at once, fleet-wide.", minimum=1, maximum=100_000),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    rate: (
        Annotated[
            str | None,
            _doc(
                'Claims per period, fleet-wide: "50/1s", "100/1m" (at most 10000 per 1ms-24h).',
                pattern=RATE_PATTERN,
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    key_concurrency: (
        Annotated[
            int | None,
            _doc("Processing jobs per concurrency_key.", minimum=1, maximum=100_000),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    aging: (
        Annotated[
            str | None,
            _doc('Effective priority +1 per this long waited: "5m".', pattern=AGING_PATTERN),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET

    def to_change(self) -> QueueChange:
        return QueueChange(
            **{
                name: getattr(self, name)
                for name in ("paused", "concurrency", "rate", "key_concurrency", "aging")
                if getattr(self, name) is not msgspec.UNSET
            }
        )


class StatusOut(msgspec.Struct, kw_only=True):
    status: str


class ErrorOut(msgspec.Struct, kw_only=True):
    """Every error: a message, and details such as the offending `field`."""

    error: str
    detail: dict[str, Any] | None = None


def job_out(job: JobRecord) -> JobOut:
    """`job_to_wire(job)` as a JobOut, built from the job's own values: converting that
    dict parsed each of its times back from text (a third of a GET /jobs of 500)."""
    lease = job.lease
    return JobOut(
        job_id=str(job.id),
        type=job.type,
        queue=job.queue,
        priority=job.priority,
        payload=dict(job.payload),
        status=job.status.value,
        retries=job.retries,
        attempts=job.attempts,
        max_retries=job.max_retries,
        error=job.error,
        run_at=job.run_at,
        idempotency_key=job.idempotency_key,
        concurrency_key=job.concurrency_key,
        timeout_seconds=job.timeout.total_seconds() if job.timeout is not None else None,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        worker_id=lease.worker_id if lease is not None else None,
        lease_expires_at=lease.expires_at if lease is not None else None,
        result=job.result,
        cancel_requested_at=job.cancel_requested_at,
        snoozes=job.snoozes,
        unique_key=job.unique_key,
    )


def jobs_out(jobs: list[JobRecord]) -> JobsOut:
    return JobsOut(jobs=[job_out(job) for job in jobs])


def page_out(page: JobPage) -> JobPageOut:
    return JobPageOut(jobs=[job_out(job) for job in page.jobs], next_cursor=page.next_cursor)


def fleet_out(fleet: Fleet) -> FleetOut:
    return msgspec.convert(fleet_to_wire(fleet), FleetOut)


def stats_out(stats: QueueStats) -> StatsOut:
    return msgspec.convert(stats_to_wire(stats), StatsOut)


def queue_out(view: QueueView) -> QueueOut:
    return msgspec.convert(queue_to_wire(view), QueueOut)


def queues_out(views: list[QueueView]) -> QueuesOut:
    return QueuesOut(queues=[queue_out(view) for view in views])


def _utc(field: str, value: datetime | None) -> datetime | None:
    """An aware time in UTC (naive ones pass through: the domain names the field)."""
    if value is None or value.utcoffset() is None:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise InvalidRequest(field, "is out of range") from None


class BulkIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Which jobs a bulk retry or cancel takes: every given field must match."""

    status: Annotated[str, _doc("Only jobs in this status.")] | None = None
    type: Annotated[str, _doc("Only jobs of this type.")] | None = None
    queue: (
        Annotated[
            str,
            _doc(
                "Only jobs of this queue.",
                min_length=1,
                max_length=MAX_QUEUE_LENGTH,
                pattern=QUEUE_PATTERN,
            ),
        ]
        | None
    ) = None
    priority: (
        Annotated[
            int,
            _doc("Only jobs of this priority.", minimum=MIN_PRIORITY, maximum=MAX_PRIORITY),
        ]
        | None
    ) = None
    created_before: (
        Annotated[datetime, _doc("Only jobs created before this RFC 3339 date-time.")] | None
    ) = None

    def to_filter(self) -> BulkFilter:
        """The domain's filter; it validates the values."""
        try:
            status = Status(self.status) if self.status is not None else None
        except ValueError:
            names = ", ".join(s.value for s in Status)
            raise InvalidRequest("status", f"must be one of {names}") from None
        return BulkFilter(
            status=status,
            type=self.type,
            queue=self.queue,
            priority=self.priority,
            created_before=_utc("created_before", self.created_before),
        )


class BulkRetryIn(BulkIn, forbid_unknown_fields=True, kw_only=True):
    """Which jobs POST /jobs/retry takes (status: dlq, failed or cancelled)."""


class BulkCancelIn(BulkIn, forbid_unknown_fields=True, kw_only=True):
    """Which jobs POST /jobs/cancel takes (status: pending or failed)."""


class CountOut(msgspec.Struct, kw_only=True):
    """How many jobs a bulk action changed, and how many it left as they were."""

    count: int
    # retry: finished jobs whose unique key an active job of their queue holds (0 for a
    # cancel)
    skipped: int = 0


class ScheduleOut(msgspec.Struct, kw_only=True):
    """A periodic schedule: its last declaration, its next and last tick, its state.

    `stale`: no process declared it lately (removed from the code, or every process
    that declares it is down); it stays listed until deleted.
    """

    name: str
    cron: str
    timezone: str
    type: str
    payload: dict[str, Any]
    priority: int
    queue: str | None
    paused: bool
    next_tick: datetime | None
    last_tick: datetime | None
    last_job_id: str | None
    last_declared_at: datetime
    stale: bool


class SchedulesOut(msgspec.Struct, kw_only=True):
    schedules: list[ScheduleOut]


class SchedulePatchIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`{"paused": true}` pauses the schedule fleet-wide; false resumes it."""

    paused: bool


def schedule_out(view: ScheduleView) -> ScheduleOut:
    wire = schedule_to_wire(view.record, next_tick=view.next_tick, stale=view.stale)
    return msgspec.convert(wire, ScheduleOut)


def schedules_out(views: list[ScheduleView]) -> SchedulesOut:
    return SchedulesOut(schedules=[schedule_out(view) for view in views])
