"""The public surface for storage adapters: everything a store needs from vesper.

A third-party store imports this module and nothing else of vesper; what it re-exports
is stable (a change is a CHANGELOG entry), every other vesper module is private. The
guide is docs/custom-stores.md; the contract suite that checks a store is
`vesper.testing.StoreContract`.

The ports (the specification; their docstrings are what the contract suite checks):
    Store, JobRepository, CompletingJobRepository, WorkerRegistry, Capabilities,
    Clock, Submitted; the factory StoreFactory and its StoreOptions; the optional
    capabilities PoolReporter (PoolFigures), Notifier (Subscription) and Migrator,
    QueueingJobRepository (named queues and their settings; `capabilities.queues`),
    and the optional `schedules` attribute, a ScheduleRegistry (periodic jobs: it
    keeps Schedule declarations as ScheduleRecords; ScheduleNotFound).

The records a store keeps and returns:
    JobRecord (a job as stored, with its lease: not `vesper.Job`, which is what a
    consumer function receives), JobId, Lease, LeaseRef, Failure, NewJob (a validated
    submission: `materialize(now=, seq=)` makes its first JobRecord), WorkerProcess,
    JobQuery, JobPage (`page_of`), QueueStats, QueueSummary (with ActiveJobs, each
    queue's); Status, TRANSITIONS and `allowed` (which status an action starts from),
    ACTIVE (the statuses in which a job holds its unique key), `claim_order` (the
    claim's sort key) and LEASE_EXPIRED_ERROR (the error an expired lease records);
    Snoozed (a snoozed attempt); UniqueSlot (the (queue, unique key) an active job
    holds: a key is unique per queue); for `bulk`, BulkAction, BulkFilter (`matches`:
    the reference semantics), BulkBatch (what a batch returns), `take` (which of a
    batch's jobs a retry skips) and `kinds_of`;
    QueueSettings, QueueChange and QueueState (a queue's settings, a change to them,
    its view).

The errors (what each means for the caller is in application/ports.py):
    StoreUnavailable (the database did not answer: vesper waits and retries),
    SchemaNotMigrated (its subclass: run `vesper migrate`), JobNotFound,
    IllegalTransition, UniqueKeyHeld (its subclass: a retry refused because another
    active job of the queue holds the unique key), IdempotencyConflict, VesperError
    (their base).

The SQL helpers, for a store over SQLAlchemy Core (they load SQLAlchemy, not vesper's
own SQL stores nor alembic):
    `metadata`, `jobs`, `workers`: the tables (`metadata.create_all` makes them);
    `utc_datetime()`, `duration()`: their portable column types; CLAIMABLE_SQL and
    PROCESSING_SQL: the status predicates, spelled as the claim index is;
    `job_of`, `jobs_of`, `row_of`, `process_of`, `aware_utc`, `in_claim_order`: row
    <-> record conversion;
    SqlDatabase: the unit-of-work protocol the shared code runs on;
    SqlJobReads: get, find, stats, cancel (with cancel requests), retry (refusing a
    held unique key) and bulk (subclass it), and summary (the overview's capped
    counts: declare `Capabilities(summary=True)` to have it used);
    `plan_submission`, SubmitPlan, `assemble`, `submit_serialized`: idempotent
    submission with unique keys (the last for a store whose writers are serialized);
    UNIQUE_ACTIVE_SQL, ACTIVE_HOLDERS (parameter `slots`: UniqueSlots) and
    `active_holders` (by slot): the jobs holding unique keys;
    FencedWrites: complete, renew, release, fail, snooze and expire (subclass it, with
    the clock bound as the parameter `now`; a job with a cancel request ends
    cancelled), built on NOW, COMPLETE, RELEASE, RENEW, FAIL, SNOOZE, EXPIRE and
    `fenced_params`, `fail_params`, `snooze_params`, `expire_params`;
    `complete_with_results` (complete storing each job's result, in a transaction);
    SqlPruning: `prune` (retention), on `prune_statement()` (subclass it);
    `queues` (the settings table) and `process_columns` (a process's queues and types);
    SqlQueues: the claim from a limited queue under its settings (`claim_limited`),
    which queues are limited (`limited()`), the settings and each queue's view;
    NOT_LIMITED_SQL: the predicate a store's own claim adds to leave those queues to
    it; SqlQueueing: queue_settings, configure_queue and queue_states (subclass it).

The notifier for a store whose processes share one machine:
    SocketNotifier(directory): a Notifier over Unix datagram sockets in `directory`
    (vesper's SQLite store uses `<file>-wake/`); where no socket can be bound the
    workers poll.
"""

from __future__ import annotations

from vesper.adapters.socket_notifier import SocketNotifier
from vesper.adapters.sqlcore.common import (
    ACTIVE_HOLDERS,
    SqlJobReads,
    SubmitPlan,
    active_holders,
    assemble,
    plan_submission,
    submit_serialized,
)
from vesper.adapters.sqlcore.common import Database as SqlDatabase
from vesper.adapters.sqlcore.leases import (
    COMPLETE,
    EXPIRE,
    FAIL,
    NOW,
    RELEASE,
    RENEW,
    SNOOZE,
    FencedWrites,
    complete_with_results,
    expire_params,
    fail_params,
    fenced_params,
    snooze_params,
)
from vesper.adapters.sqlcore.queues import NOT_LIMITED_SQL, SqlQueueing, SqlQueues
from vesper.adapters.sqlcore.retention import SqlPruning, prune_statement
from vesper.adapters.sqlcore.rows import (
    aware_utc,
    in_claim_order,
    job_of,
    jobs_of,
    process_columns,
    process_of,
    row_of,
)
from vesper.adapters.sqlcore.tables import (
    CLAIMABLE_SQL,
    PROCESSING_SQL,
    UNIQUE_ACTIVE_SQL,
    duration,
    jobs,
    metadata,
    queues,
    utc_datetime,
    workers,
)
from vesper.application.ports import (
    Capabilities,
    Clock,
    CompletingJobRepository,
    JobRepository,
    Migrator,
    Notifier,
    PoolFigures,
    PoolReporter,
    QueueingJobRepository,
    ScheduleRegistry,
    Store,
    StoreFactory,
    StoreOptions,
    Submitted,
    Subscription,
    WorkerRegistry,
)
from vesper.domain.bulk import BulkAction, BulkBatch, BulkFilter, kinds_of, take
from vesper.domain.errors import (
    IdempotencyConflict,
    IllegalTransition,
    JobNotFound,
    ScheduleNotFound,
    SchemaNotMigrated,
    StoreUnavailable,
    UniqueKeyHeld,
    VesperError,
)
from vesper.domain.fleet import WorkerProcess
from vesper.domain.job import (
    LEASE_EXPIRED_ERROR,
    Failure,
    JobId,
    JobRecord,
    Lease,
    LeaseRef,
    Snoozed,
    UniqueSlot,
)
from vesper.domain.ordering import claim_order
from vesper.domain.periodic import Schedule, ScheduleRecord
from vesper.domain.query import JobPage, JobQuery, page_of
from vesper.domain.queues import QueueChange, QueueSettings, QueueState
from vesper.domain.states import ACTIVE, TRANSITIONS, Status, allowed
from vesper.domain.stats import ActiveJobs, QueueStats, QueueSummary
from vesper.domain.submission import NewJob

__all__ = [
    "ACTIVE",
    "ACTIVE_HOLDERS",
    "CLAIMABLE_SQL",
    "COMPLETE",
    "EXPIRE",
    "FAIL",
    "LEASE_EXPIRED_ERROR",
    "NOT_LIMITED_SQL",
    "NOW",
    "PROCESSING_SQL",
    "RELEASE",
    "RENEW",
    "SNOOZE",
    "TRANSITIONS",
    "UNIQUE_ACTIVE_SQL",
    "ActiveJobs",
    "BulkAction",
    "BulkBatch",
    "BulkFilter",
    "Capabilities",
    "Clock",
    "CompletingJobRepository",
    "Failure",
    "FencedWrites",
    "IdempotencyConflict",
    "IllegalTransition",
    "JobId",
    "JobNotFound",
    "JobPage",
    "JobQuery",
    "JobRecord",
    "JobRepository",
    "Lease",
    "LeaseRef",
    "Migrator",
    "NewJob",
    "Notifier",
    "PoolFigures",
    "PoolReporter",
    "QueueChange",
    "QueueSettings",
    "QueueState",
    "QueueStats",
    "QueueSummary",
    "QueueingJobRepository",
    "Schedule",
    "ScheduleNotFound",
    "ScheduleRecord",
    "ScheduleRegistry",
    "SchemaNotMigrated",
    "Snoozed",
    "SocketNotifier",
    "SqlDatabase",
    "SqlJobReads",
    "SqlPruning",
    "SqlQueueing",
    "SqlQueues",
    "Status",
    "Store",
    "StoreFactory",
    "StoreOptions",
    "StoreUnavailable",
    "SubmitPlan",
    "Submitted",
    "Subscription",
    "UniqueKeyHeld",
    "UniqueSlot",
    "VesperError",
    "WorkerProcess",
    "WorkerRegistry",
    "active_holders",
    "allowed",
    "assemble",
    "aware_utc",
    "claim_order",
    "complete_with_results",
    "duration",
    "expire_params",
    "fail_params",
    "fenced_params",
    "in_claim_order",
    "job_of",
    "jobs",
    "jobs_of",
    "kinds_of",
    "metadata",
    "page_of",
    "plan_submission",
    "process_columns",
    "process_of",
    "prune_statement",
    "queues",
    "row_of",
    "snooze_params",
    "submit_serialized",
    "take",
    "utc_datetime",
    "workers",
]
