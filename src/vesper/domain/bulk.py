"""Bulk actions: retry or cancel every job matching a filter, in bounded batches."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

import attrs

from vesper.domain.errors import InvalidRequest
from vesper.domain.job import JobId, JobRecord, UniqueSlot, unique_slot
from vesper.domain.queues import check_queue
from vesper.domain.states import FINISHED, TRANSITIONS, Status


class BulkAction(enum.StrEnum):
    RETRY = "retry"  # dlq/failed/cancelled -> pending, as JobRecord.retry
    CANCEL = "cancel"  # pending/failed -> cancelled, as JobRecord.cancel


@attrs.frozen(kw_only=True)
class BulkFilter:
    """Which jobs a bulk action takes: every given field must match.

    `touched_before` and `after_seq` are set by the use case, not the caller: the action
    takes only jobs last changed before it began, so each job changes at most once, and
    jobs a bulk retry sends back to dlq meanwhile are not retried again; each batch
    starts after the last job the previous one looked at (`BulkBatch.last_seq`), so jobs
    a retry skips are not looked at again (the loop ends).
    """

    status: Status | None = None
    type: str | None = None
    # a store without named queues is only asked with None (BulkJobs: all its jobs are
    # in "default")
    queue: str | None = None
    priority: int | None = None
    created_before: datetime | None = None
    touched_before: datetime | None = None
    after_seq: int | None = None
    # only these jobs (the dashboard's selection); None: any job
    ids: frozenset[JobId] | None = None

    def __attrs_post_init__(self) -> None:
        if self.queue is not None:
            check_queue(self.queue)
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
            and (self.queue is None or job.queue == self.queue)
            and (self.priority is None or job.priority == self.priority)
            and (self.created_before is None or job.created_at < self.created_before)
            and (self.touched_before is None or job.updated_at < self.touched_before)
            and (self.after_seq is None or job.seq > self.after_seq)
            and (self.ids is None or job.id in self.ids)
        )


@attrs.frozen(kw_only=True)
class BulkBatch:
    """What a bulk batch did (or, from the use case, the whole action)."""

    changed: int = 0
    # retry only: jobs left as they were because an active job of their queue holds their
    # unique key (another one, or one this batch retried first): never two active jobs
    # with one key in one queue
    skipped: int = 0
    # the insertion order (`seq`) of the last job the batch looked at, changed or
    # skipped; None: no job matched, the action is done
    last_seq: int | None = None
    # the changed jobs by (type, priority): what the metrics count them by
    kinds: Mapping[tuple[str, int], int] = attrs.field(factory=dict)


class Candidate(Protocol):
    """What `take` and `kinds_of` read of a job: a JobRecord, or a store's row of these
    columns."""

    @property
    def id(self) -> Any: ...
    @property
    def status(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def unique_key(self) -> str | None: ...
    @property
    def type(self) -> str: ...
    @property
    def priority(self) -> int: ...


def kinds_of(jobs: Iterable[Candidate]) -> dict[tuple[str, int], int]:
    """How many of `jobs` there are of each (type, priority): BulkBatch.kinds."""
    return dict(Counter((job.type, job.priority) for job in jobs))


C = TypeVar("C", bound=Candidate)


def take(
    matching: Sequence[C], action: BulkAction, holders: Mapping[UniqueSlot, Any]
) -> tuple[list[C], list[C]]:
    """Split a batch's jobs (in insertion order) into those the action changes and those
    it skips: a retry skips a finished job whose unique key an active job of its queue
    holds (`holders`: the id of the active holder of each slot), or one retried earlier
    in the batch took. A failed job holds its own key: it is never skipped."""
    if action is not BulkAction.RETRY:
        return list(matching), []
    taken: list[C] = []
    skipped: list[C] = []
    held = dict(holders)
    for job in matching:
        slot = unique_slot(job.queue, job.unique_key)
        if slot is None or job.status not in FINISHED:
            taken.append(job)
        elif slot in held and held[slot] != job.id:
            skipped.append(job)
        else:
            held[slot] = job.id
            taken.append(job)
    return taken, skipped


def slots_of(jobs: Iterable[Candidate]) -> list[UniqueSlot]:
    """The slots the finished jobs among `jobs` would take if retried, in sorted order:
    the holders a bulk retry looks up (a failed job holds its own)."""
    return sorted(
        {
            slot
            for job in jobs
            if job.status in FINISHED and (slot := unique_slot(job.queue, job.unique_key))
        }
    )


def apply(job: JobRecord, action: BulkAction, *, now: datetime) -> JobRecord:
    """The job after the action."""
    if action is BulkAction.RETRY:
        return job.retry(now=now)
    return job.cancel(now=now)
