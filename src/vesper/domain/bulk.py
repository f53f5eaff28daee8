"""Bulk actions: retry or cancel every job matching a filter, in bounded batches."""

from __future__ import annotations

import enum
from datetime import datetime

import attrs

from vesper.domain.errors import InvalidRequest
from vesper.domain.job import JobRecord
from vesper.domain.states import TRANSITIONS, Status


class BulkAction(enum.StrEnum):
    RETRY = "retry"  # dlq/failed/cancelled -> pending, as JobRecord.retry
    CANCEL = "cancel"  # pending/failed -> cancelled, as JobRecord.cancel


@attrs.frozen(kw_only=True)
class BulkFilter:
    """Which jobs a bulk action takes: every given field must match.

    `touched_before` is set by the use case, not the caller: the action takes only jobs
    last changed before it began, so each job changes at most once, and jobs a bulk
    retry sends back to dlq meanwhile are not retried again (the loop ends).
    """

    status: Status | None = None
    type: str | None = None
    # queues arrive with issue 15: accepted here; a store without queues is only asked
    # with None (the use case refuses another value until then)
    queue: str | None = None
    priority: int | None = None
    created_before: datetime | None = None
    touched_before: datetime | None = None

    def __attrs_post_init__(self) -> None:
        if self.priority is not None and not 0 <= self.priority <= 10:
            raise InvalidRequest("priority", "must be an integer from 0 to 10")
        if self.created_before is not None and self.created_before.utcoffset() is None:
            raise InvalidRequest("created_before", "must be a date-time with a time zone")

    def statuses(self, action: BulkAction) -> frozenset[Status]:
        """The statuses the action takes jobs from, narrowed by the filter's status."""
        allowed = TRANSITIONS[action.value][0]
        if self.status is None:
            return allowed
        if self.status not in allowed:
            names = ", ".join(sorted(s.value for s in allowed))
            raise InvalidRequest("status", f"{action.value} takes jobs that are {names}")
        return frozenset({self.status})

    def matches(self, job: JobRecord, action: BulkAction) -> bool:
        """Whether the action takes `job` (the reference semantics the stores follow)."""
        return (
            job.status in self.statuses(action)
            and (self.type is None or job.type == self.type)
            and (self.priority is None or job.priority == self.priority)
            and (self.created_before is None or job.created_at < self.created_before)
            and (self.touched_before is None or job.updated_at < self.touched_before)
        )


def apply(job: JobRecord, action: BulkAction, *, now: datetime) -> JobRecord:
    """The job after the action."""
    if action is BulkAction.RETRY:
        return job.retry(now=now)
    return job.cancel(now=now)
