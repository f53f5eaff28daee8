"""The use cases a worker process calls, built by the container."""

from __future__ import annotations

import attrs

from vesper.application.execution import (
    ClaimJobs,
    RecordAndClaim,
    RecordOutcomes,
    ReleaseJobs,
    RenewLeases,
)
from vesper.application.fleet import (
    DeregisterWorker,
    ExpireLeases,
    GetFleet,
    HeartbeatWorker,
    ReapDeadWorkers,
    RegisterWorker,
)
from vesper.application.retention import PruneJobs


@attrs.frozen(kw_only=True)
class WorkerUseCases:
    claim_jobs: ClaimJobs
    record_outcomes: RecordOutcomes
    record_and_claim: RecordAndClaim  # outcomes and the next claim in one store call
    renew_leases: RenewLeases
    release_jobs: ReleaseJobs
    register_worker: RegisterWorker
    heartbeat_worker: HeartbeatWorker
    deregister_worker: DeregisterWorker
    reap_dead_workers: ReapDeadWorkers
    expire_leases: ExpireLeases
    get_fleet: GetFleet
    prune_jobs: PruneJobs | None = None  # None: this process prunes nothing
