"""The job's JSON shape, shared by the HTTP API and the CLI.

The original service's field names (job_id, type, priority, payload, status, retries,
error, created_at, updated_at) stay as they were; vesper's own fields follow.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from vesper.application.queues import QueueView
from vesper.domain.fleet import Fleet, WorkerProcess
from vesper.domain.job import JobRecord, Lease
from vesper.domain.periodic import ScheduleRecord
from vesper.domain.queues import duration_text
from vesper.domain.states import Status
from vesper.domain.stats import QueueStats


def rfc3339(moment: datetime) -> str:
    """UTC with a Z, microseconds when there are any."""
    if moment.tzinfo is not UTC:  # the stores' times are UTC already: no new object
        moment = moment.astimezone(UTC)
    return moment.isoformat().removesuffix("+00:00") + "Z"


wire_converter = cattrs.Converter()
wire_converter.register_unstructure_hook(UUID, str)
wire_converter.register_unstructure_hook(datetime, rfc3339)
wire_converter.register_unstructure_hook(Status, lambda s: s.value)
wire_converter.register_unstructure_hook(timedelta, lambda d: d.total_seconds())
wire_converter.register_unstructure_hook(Lease, lambda _: None)

_job_fields = make_dict_unstructure_fn(
    JobRecord,
    wire_converter,
    id=override(rename="job_id"),
    fingerprint=override(omit=True),
    seq=override(omit=True),
    lease=override(omit=True),
    trace_context=override(omit=True),
    timeout=override(rename="timeout_seconds"),
)


def job_to_wire(job: JobRecord) -> dict[str, Any]:
    data: dict[str, Any] = _job_fields(job)
    data["worker_id"] = job.worker_id
    expires = job.lease_expires_at
    data["lease_expires_at"] = rfc3339(expires) if expires else None
    return data


def process_to_wire(process: WorkerProcess) -> dict[str, Any]:
    data: dict[str, Any] = wire_converter.unstructure(process)
    data["worker_id"] = data.pop("id")
    data["queues"] = dict(process.queues) if process.queues is not None else None
    data["types"] = list(process.types) if process.types is not None else None
    return data


def queue_to_wire(view: QueueView) -> dict[str, Any]:
    state, settings = view.state, view.state.settings
    return {
        "name": state.name,
        "by_status": {status.value: n for status, n in state.counts.items()},
        "oldest_pending_age_seconds": round(state.oldest_due_age.total_seconds(), 3),
        "paused": settings.paused,
        "concurrency": settings.concurrency,
        "rate": str(settings.rate) if settings.rate is not None else None,
        "key_concurrency": settings.key_concurrency,
        "aging": duration_text(settings.aging) if settings.aging is not None else None,
        "unserved_types": list(view.unserved_types),
    }


def fleet_to_wire(fleet: Fleet) -> dict[str, Any]:
    return {
        "total_workers": fleet.total_workers,
        "total_processes": len(fleet.processes),
        "machines": [wire_converter.unstructure(m) for m in fleet.machines],
        "workers": [process_to_wire(p) for p in fleet.processes],
    }


def stats_to_wire(stats: QueueStats) -> dict[str, Any]:
    return {
        "total": stats.total,
        "by_status": {status.value: n for status, n in stats.by_status.items()},
        "by_priority": {str(priority): n for priority, n in stats.by_priority.items()},
        "oldest_pending_age_seconds": round(stats.oldest_due_age.total_seconds(), 3),
    }


def schedule_to_wire(
    record: ScheduleRecord, *, next_tick: datetime | None, stale: bool
) -> dict[str, Any]:
    """A schedule as the API and `vesper schedules` show it."""
    schedule = record.schedule
    return {
        "name": schedule.name,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "type": schedule.type,
        "payload": dict(schedule.payload),
        "priority": schedule.priority,
        "queue": schedule.queue,
        "paused": record.paused,
        "next_tick": rfc3339(next_tick) if next_tick is not None else None,
        "last_tick": rfc3339(record.last_tick) if record.last_tick is not None else None,
        "last_job_id": str(record.last_job_id) if record.last_job_id is not None else None,
        "last_declared_at": rfc3339(record.last_declared_at),
        "stale": stale,
    }
