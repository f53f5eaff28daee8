"""Processes joining, heartbeating, being reaped; leases ended by expiry or by death."""

from __future__ import annotations

from datetime import timedelta

from vesper.adapters.clock import FixedClock
from vesper.adapters.memory import InMemoryJobRepository, InMemoryWorkerRegistry
from vesper.application.execution import ClaimJobs, Outcome, RecordOutcomes, lease_of
from vesper.application.fleet import (
    DeregisterWorker,
    ExpireLeases,
    GetFleet,
    HeartbeatWorker,
    ReapDeadWorkers,
    RegisterWorker,
)
from vesper.application.policies import Policies
from vesper.application.submit import SubmitJob
from vesper.domain.fleet import MachineSummary, WorkerProcess
from vesper.domain.job import LEASE_EXPIRED_ERROR
from vesper.domain.states import Status
from vesper.domain.submission import JobRequest

from .builders import T0, seconds

# long leases, so that only death (not expiry) ends them in the reaping tests
SETTINGS = Policies(lease=seconds(300), dead_after=seconds(30))


def process(worker_id: str, machine: str = "m1", concurrency: int = 4) -> WorkerProcess:
    # started_at/last_heartbeat are placeholders: register() sets both to the store's now
    return WorkerProcess(
        id=worker_id,
        machine=machine,
        pid=4242,
        concurrency=concurrency,
        started_at=T0 - timedelta(days=1),
        last_heartbeat=T0 - timedelta(days=1),
    )


def submit(repo: InMemoryJobRepository, n: int = 1, max_retries: int = 3) -> None:
    for _ in range(n):
        SubmitJob(repo)(JobRequest(type="t", max_retries=max_retries))


def test_register_sets_the_times_to_now(
    registry: InMemoryWorkerRegistry, clock: FixedClock
) -> None:
    clock.advance(seconds(7))
    registered = RegisterWorker(registry)(process("p1"))
    assert registered.started_at == registered.last_heartbeat == T0 + seconds(7)
    assert registry.processes() == [registered]


def test_get_fleet_groups_the_registered_processes(registry: InMemoryWorkerRegistry) -> None:
    register = RegisterWorker(registry)
    register(process("a1", "alpha", 5))
    register(process("b1", "beta", 2))
    register(process("a2", "alpha", 3))
    fleet = GetFleet(registry)()
    assert fleet.total_workers == 10
    assert fleet.machines == (
        MachineSummary(machine="alpha", processes=2, workers=8),
        MachineSummary(machine="beta", processes=1, workers=2),
    )
    DeregisterWorker(registry)("a1")
    DeregisterWorker(registry)("never-registered")
    assert GetFleet(registry)().total_workers == 5


def test_reap_dead_workers_ends_only_the_dead_process_leases(
    repo: InMemoryJobRepository, registry: InMemoryWorkerRegistry, clock: FixedClock
) -> None:
    RegisterWorker(registry)(process("dead"))
    RegisterWorker(registry)(process("alive"))
    submit(repo, 4)
    claim = ClaimJobs(repo, SETTINGS)
    dead_jobs = claim("dead", 2)
    alive_jobs = claim("alive", 2)
    clock.advance(seconds(20))
    assert HeartbeatWorker(registry)(process("alive"))
    clock.advance(seconds(11))  # "dead" silent 31 s, "alive" 11 s

    ended = ReapDeadWorkers(registry, repo, SETTINGS)()

    assert sorted(j.id for j in ended) == sorted(j.id for j in dead_jobs)
    for job in ended:
        assert job.status is Status.FAILED
        assert job.retries == 1
        assert job.run_at <= clock.now()  # claimable at once
        assert job.run_at == repo.get(job.id).created_at  # keeps its place in the queue
        assert job.error == LEASE_EXPIRED_ERROR
        assert job.lease is None
    assert [p.id for p in registry.processes()] == ["alive"]
    for job in alive_jobs:
        assert repo.get(job.id).status is Status.PROCESSING
    assert RecordOutcomes(repo)([Outcome(job=dead_jobs[0])]) == []  # fenced: lease lost
    reclaimed = ClaimJobs(repo, SETTINGS)("alive", 10)
    assert sorted(j.id for j in reclaimed) == sorted(j.id for j in dead_jobs)
    assert all(j.attempts == 2 for j in reclaimed)


def test_reap_dead_workers_sends_a_job_without_retries_left_to_dlq(
    repo: InMemoryJobRepository, registry: InMemoryWorkerRegistry, clock: FixedClock
) -> None:
    RegisterWorker(registry)(process("dead"))
    submit(repo, max_retries=0)
    [job] = ClaimJobs(repo, SETTINGS)("dead", 1)
    clock.advance(seconds(31))
    [ended] = ReapDeadWorkers(registry, repo, SETTINGS)()
    assert (ended.id, ended.status, ended.retries) == (job.id, Status.DLQ, 0)


def test_reap_dead_workers_with_no_one_dead_does_nothing(
    repo: InMemoryJobRepository, registry: InMemoryWorkerRegistry, clock: FixedClock
) -> None:
    RegisterWorker(registry)(process("p1"))
    submit(repo)
    [job] = ClaimJobs(repo, SETTINGS)("p1", 1)
    clock.advance(seconds(30))  # exactly dead_after: not yet dead
    assert ReapDeadWorkers(registry, repo, SETTINGS)() == []
    assert repo.get(job.id) == job
    assert len(registry.processes()) == 1


def test_heartbeat_after_being_reaped_registers_again(
    repo: InMemoryJobRepository, registry: InMemoryWorkerRegistry, clock: FixedClock
) -> None:
    heartbeat = HeartbeatWorker(registry)
    RegisterWorker(registry)(process("p1", concurrency=6))
    clock.advance(seconds(10))
    assert heartbeat(process("p1", concurrency=6)) is True
    assert registry.processes()[0].last_heartbeat == T0 + seconds(10)
    clock.advance(seconds(45))
    ReapDeadWorkers(registry, repo, SETTINGS)()
    assert registry.processes() == []

    assert heartbeat(process("p1", concurrency=6)) is False
    [back] = registry.processes()
    assert (back.id, back.concurrency) == ("p1", 6)
    assert back.started_at == back.last_heartbeat == T0 + seconds(55)
    assert heartbeat(process("p1", concurrency=6)) is True
    assert GetFleet(registry)().total_workers == 6


def test_expire_leases_makes_expired_jobs_claimable_again(
    repo: InMemoryJobRepository, clock: FixedClock
) -> None:
    settings = Policies(lease=seconds(30))
    submit(repo, 2)
    first, second = ClaimJobs(repo, settings)("w1", 2)
    clock.advance(seconds(10))
    repo.renew([lease_of(second)], lease=seconds(60))
    clock.advance(seconds(20))  # first's lease ends now; second's runs to T0+70s

    expired = ExpireLeases(repo)()

    assert [j.id for j in expired] == [first.id]
    assert (expired[0].status, expired[0].retries) == (Status.FAILED, 1)
    assert repo.get(second.id).status is Status.PROCESSING
    assert ExpireLeases(repo)() == []
    [again] = ClaimJobs(repo, settings)("w2", 5)
    assert (again.id, again.attempts, again.worker_id) == (first.id, 2, "w2")
