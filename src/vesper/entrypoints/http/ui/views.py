"""View models: what each page shows, computed from the use cases' results.

Pure functions of domain objects: no request, no store, no HTML. The templates format
only what is here; job data stays data (the templates escape it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import attrs

from vesper.domain.activity import Activity
from vesper.domain.fleet import Fleet, WorkerProcess
from vesper.domain.job import JobRecord
from vesper.domain.query import JobPage, JobQuery
from vesper.domain.states import Status, allowed
from vesper.domain.stats import ActiveJobs, QueueSummary
from vesper.entrypoints.http.ui.chart import Chart, chart_of

STATUSES = tuple(s.value for s in Status)
PRIORITIES = tuple(range(11))


def age(delta: timedelta) -> str:
    """'3 s', '4 min 05 s', '2 h 07 min', '3 d 4 h': short, exact to its unit."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def when(at: datetime | None) -> str:
    return "" if at is None else at.strftime("%Y-%m-%d %H:%M:%S UTC")


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent (`00-<trace id>-<span id>-<flags>`)."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


@attrs.frozen(kw_only=True)
class Overview:
    by_status: Mapping[str, str]  # "12", or "10000+" where the count stopped at the cap
    total: str
    cap: int  # the count each status stops at
    oldest_due_age: str
    processes: int
    machines: int
    slots: int
    chart: Chart | None  # None: the store does not count activity
    done_last_hour: int
    failed_last_hour: int
    by_queue: tuple[QueueLine, ...] | None  # None until jobs have queues


@attrs.frozen(kw_only=True)
class QueueLine:
    """A queue's active jobs on the overview, each count as `count` shows it."""

    name: str
    waiting: str
    running: str


def count(n: int, capped: bool) -> str:
    """A count as the overview shows it: "10000+" when counting stopped at 10000."""
    return f"{n}+" if capped else str(n)


def capped_count(n: int, cap: int) -> str:
    """A count that stopped at cap + 1 (more than `cap`), as `count` shows it."""
    return count(min(n, cap), n > cap)


def overview(
    summary: QueueSummary,
    fleet: Fleet,
    activity: Activity | None,
    by_queue: Mapping[str, ActiveJobs] | None = None,
) -> Overview:
    cap = summary.cap
    return Overview(
        by_status={s.value: capped_count(n, cap) for s, n in summary.by_status.items()},
        total=count(summary.total, summary.total_capped),
        cap=summary.cap,
        oldest_due_age=age(summary.oldest_due_age),
        processes=len(fleet.processes),
        machines=len(fleet.machines),
        slots=fleet.total_workers,
        chart=chart_of(activity) if activity is not None else None,
        done_last_hour=activity.done if activity is not None else 0,
        failed_last_hour=activity.failed if activity is not None else 0,
        by_queue=None
        if by_queue is None
        else tuple(
            QueueLine(
                name=name,
                waiting=capped_count(active.waiting, cap),
                running=capped_count(active.running, cap),
            )
            for name, active in sorted(by_queue.items())
        ),
    )


@attrs.frozen(kw_only=True)
class JobRow:
    id: str
    short_id: str
    type: str
    status: str
    priority: int
    attempts: int
    key: str
    queue: str
    run_at: str
    updated_at: str


@attrs.frozen(kw_only=True)
class JobList:
    rows: tuple[JobRow, ...]
    filters: Mapping[str, str]  # as the form shows them ("" for none)
    next_query: str | None  # the query string of the next page
    first_query: str | None  # of the first page, when this is not it


def job_row(job: JobRecord) -> JobRow:
    return JobRow(
        id=str(job.id),
        short_id=str(job.id)[:8],
        type=job.type,
        status=job.status.value,
        priority=job.priority,
        attempts=job.attempts,
        key=job.idempotency_key or "",
        queue=job.queue,
        run_at=when(job.run_at),
        updated_at=when(job.updated_at),
    )


def job_list(page: JobPage, query: JobQuery) -> JobList:
    filters = {
        "status": query.status.value if query.status is not None else "",
        "type": query.type or "",
        "priority": str(query.priority) if query.priority is not None else "",
        "q": query.search or "",
        "queue": query.queue or "",
    }
    kept = {k: v for k, v in filters.items() if v}
    return JobList(
        rows=tuple(job_row(j) for j in page.jobs),
        filters=filters,
        next_query=urlencode({**kept, "cursor": page.next_cursor}) if page.next_cursor else None,
        first_query=urlencode(kept) if query.cursor else None,
    )


@attrs.frozen(kw_only=True)
class Field:
    name: str
    value: str


@attrs.frozen(kw_only=True)
class JobDetail:
    id: str
    type: str
    status: str
    fields: tuple[Field, ...]
    payload: str  # pretty-printed JSON
    error: str
    trace_id: str | None
    can_retry: bool
    can_cancel: bool
    timeline: tuple[Field, ...]  # what the record tells of its life, in order
    # a running job's cancel button requests the cancel; once requested, it is gone
    running: bool = False
    cancel_requested: bool = False
    result: str | None = None  # pretty-printed JSON; None: the job returned none


def job_detail(job: JobRecord) -> JobDetail:
    fields = (
        Field(name="id", value=str(job.id)),
        Field(name="type", value=job.type),
        Field(name="status", value=job.status.value),
        Field(name="priority", value=str(job.priority)),
        Field(name="queue", value=job.queue),
        Field(name="concurrency key", value=job.concurrency_key or "—"),
        Field(name="attempts", value=str(job.attempts)),
        Field(name="retries", value=f"{job.retries} of {job.max_retries}"),
        Field(name="run at", value=when(job.run_at)),
        Field(name="idempotency key", value=job.idempotency_key or "—"),
        Field(name="timeout", value=age(job.timeout) if job.timeout is not None else "—"),
        Field(name="worker", value=job.worker_id or "—"),
        Field(name="lease expires", value=when(job.lease_expires_at) or "—"),
        Field(name="trace context", value=job.trace_context or "—"),
        Field(name="fingerprint", value=job.fingerprint or "—"),
        Field(name="insertion order", value=str(job.seq)),
        Field(name="unique key", value=job.unique_key or "—"),
        Field(name="snoozes", value=str(job.snoozes)),
        Field(name="cancel requested", value=when(job.cancel_requested_at) or "—"),
    )
    timeline = tuple(
        Field(name=name, value=when(at))
        for name, at in (
            ("created", job.created_at),
            ("last claimed", job.started_at),
            ("last updated", job.updated_at),
            ("finished", job.finished_at),
        )
        if at is not None
    )
    return JobDetail(
        id=str(job.id),
        type=job.type,
        status=job.status.value,
        fields=fields,
        payload=pretty(job.payload),
        error=job.error,
        trace_id=trace_id(job.trace_context),
        can_retry=allowed("retry", job.status),
        can_cancel=allowed("cancel", job.status)
        or (allowed("request_cancel", job.status) and job.cancel_requested_at is None),
        timeline=timeline,
        running=job.status is Status.PROCESSING,
        cancel_requested=job.cancel_requested_at is not None,
        result=pretty(job.result) if job.result is not None else None,
    )


def pretty(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True)


@attrs.frozen(kw_only=True)
class ProcessRow:
    id: str
    pid: int
    slots: int
    busy: int
    started: str
    heartbeat_age: str


@attrs.frozen(kw_only=True)
class MachineGroup:
    machine: str
    processes: tuple[ProcessRow, ...]
    slots: int
    busy: int


@attrs.frozen(kw_only=True)
class Workers:
    machines: tuple[MachineGroup, ...]
    busy_known: bool  # False: more jobs are processing than one page counts


def workers(fleet: Fleet, processing: JobPage, now: datetime) -> Workers:
    """The fleet by machine; a process's busy slots are the processing jobs it leases."""
    busy: dict[str, int] = {}
    for job in processing.jobs:
        if job.worker_id is not None:
            busy[job.worker_id] = busy.get(job.worker_id, 0) + 1

    def row(p: WorkerProcess) -> ProcessRow:
        return ProcessRow(
            id=p.id,
            pid=p.pid,
            slots=p.concurrency,
            busy=busy.get(p.id, 0),
            started=when(p.started_at),
            heartbeat_age=age(now - p.last_heartbeat),
        )

    groups = []
    for summary in fleet.machines:
        rows = tuple(row(p) for p in fleet.processes if p.machine == summary.machine)
        groups.append(
            MachineGroup(
                machine=summary.machine,
                processes=rows,
                slots=summary.workers,
                busy=sum(r.busy for r in rows),
            )
        )
    return Workers(machines=tuple(groups), busy_known=processing.next_cursor is None)
