"""The composition root: the only place that knows the concrete classes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from dependency_injector import containers, providers

from vesper.adapters.clock import SystemClock
from vesper.adapters.memory import InMemoryStore
from vesper.adapters.otel import OtelMetrics
from vesper.adapters.signal import LocalJobSignal
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
from vesper.application.group_commit import GroupCommit
from vesper.application.management import CancelJob, GetJob, GetStats, ListJobs, RetryJob
from vesper.application.ports import Clock, JobRepository, Store, WorkerRegistry
from vesper.application.submit import SubmitJob, SubmitJobs
from vesper.domain.errors import StoreUnavailable
from vesper.entrypoints.settings import BUILTIN_STORAGES, Settings, load_storage_plugin
from vesper.entrypoints.tracing import open_tracer_provider
from vesper.entrypoints.worker import WorkerRunner, WorkerUseCases, open_executor_lane


def open_memory_store(clock: Clock) -> Iterator[Store]:
    yield InMemoryStore(clock)


def open_sql_store(
    url: str, clock: Clock, migrate: bool, pool_size: int, max_overflow: int
) -> Iterator[Store]:
    """The SQL store; its main pool (PostgreSQL) has `pool_size` + `max_overflow`
    connections (VESPER_DB_POOL_SIZE, VESPER_DB_MAX_OVERFLOW). Heartbeats and lease
    renewals keep their own small pool, whatever these are."""
    from vesper.adapters.sql import open_store  # noqa: PLC0415 (SQLAlchemy loads only when chosen)
    from vesper.adapters.sql.engines import default_pool_size  # noqa: PLC0415

    with default_pool_size(pool_size, max_overflow):
        store = open_store(url, clock=clock, migrate=migrate)
    try:
        yield store
    finally:
        store.close()


def open_metrics(
    get_stats: Callable[[], GetStats],
    get_fleet: Callable[[], GetFleet],
    store: Callable[[], Store],
    max_types: int,
) -> Iterator[OtelMetrics]:
    """Metrics of this process; the store opens at the first scrape, not before."""
    metrics = OtelMetrics(max_types=max_types)
    metrics.observe_queue(lambda: get_stats()())  # noqa: PLW0108 (lazy: opens the store at a scrape)
    metrics.observe_fleet(lambda: get_fleet()())  # noqa: PLW0108
    metrics.observe_pools(lambda: store_pools(store()))
    try:
        yield metrics
    finally:
        metrics.shutdown()


def open_plugin_store(name: str, url: str, clock: Clock) -> Iterator[Store]:
    """A third-party store, from the entry point `name` of the group `vesper.storage`."""
    factory = load_storage_plugin(name)
    store = factory(url, clock)
    try:
        yield store
    finally:
        store.close()


def open_listener(storage: str, url: str, signal: LocalJobSignal) -> Iterator[object]:
    """PostgreSQL: LISTEN for submissions anywhere and wake this process's workers."""
    if storage != "postgres":
        yield None
        return
    from vesper.adapters.sql.notify import PostgresJobListener  # noqa: PLC0415

    listener = PostgresJobListener(url, signal.notify).start()
    try:
        yield listener
    finally:
        listener.stop()


def store_pools(store: Store) -> dict[str, Any]:
    """The SQL store's connection pools by name (main, beat); none for other stores."""
    # SqlStore keeps its engines in `_databases`; a public accessor is requested
    databases = getattr(store, "_databases", None) or ()
    names = ("main", "beat")
    return {
        names[i] if i < len(names) else f"pool{i}": db.engine.pool for i, db in enumerate(databases)
    }


STORE_OPEN_WAIT_S = 5.0  # a caller waits this long for another thread opening the store


def open_once(open_store: Callable[[], Store], lock: threading.Lock) -> Store:
    """The store, opened by one thread at a time.

    The store's resource is not thread-safe: first uses in several threads at once (the
    workers waiting for the database and the API's first requests, in `vesper serve`)
    would each open a store, and all but one would leak their connection pools.
    """
    if not lock.acquire(timeout=STORE_OPEN_WAIT_S):
        raise StoreUnavailable("the store is still being opened")
    try:
        return open_store()
    finally:
        lock.release()


def _jobs(store: Store) -> JobRepository:
    return store.jobs


def _workers(store: Store) -> WorkerRegistry:
    return store.workers


class Container(containers.DeclarativeContainer):
    config = providers.Configuration(strict=True)

    clock = providers.Singleton(SystemClock)
    opened_store = providers.Selector(
        config.storage_kind,
        memory=providers.Resource(open_memory_store, clock=clock),
        sqlite=providers.Resource(
            open_sql_store,
            url=config.database_url,
            clock=clock,
            migrate=config.auto_migrate,
            pool_size=config.db_pool_size,
            max_overflow=config.db_max_overflow,
        ),
        postgres=providers.Resource(
            open_sql_store,
            url=config.database_url,
            clock=clock,
            migrate=config.auto_migrate,
            pool_size=config.db_pool_size,
            max_overflow=config.db_max_overflow,
        ),
        plugin=providers.Resource(
            open_plugin_store, name=config.storage, url=config.database_url, clock=clock
        ),
    )
    store_lock = providers.ThreadSafeSingleton(threading.Lock)
    store = providers.Callable(open_once, opened_store.provider, store_lock)
    job_repository = providers.Callable(_jobs, store)
    worker_registry = providers.Callable(_workers, store)
    policies = providers.Callable(lambda s: s.policies, config.settings)
    worker_settings = providers.Callable(lambda s: s.worker, config.settings)
    job_signal = providers.Singleton(LocalJobSignal)
    job_listener = providers.Resource(
        open_listener, storage=config.storage, url=config.database_url, signal=job_signal
    )
    get_stats = providers.Factory(GetStats, jobs=job_repository)
    get_fleet = providers.Factory(GetFleet, registry=worker_registry)
    metrics = providers.Resource(
        open_metrics,
        get_stats=get_stats.provider,
        get_fleet=get_fleet.provider,
        store=store.provider,
        max_types=config.metrics_max_types,
    )
    tracer_provider = providers.Resource(open_tracer_provider)
    worker_tracer = providers.Callable(lambda p: p.get_tracer("vesper.worker"), tracer_provider)

    submit_group = providers.ThreadSafeSingleton(
        GroupCommit, max_batch=providers.Callable(lambda q: q.limits.max_batch, policies)
    )
    submit_job = providers.Factory(
        SubmitJob,
        jobs=job_repository,
        settings=policies,
        signal=job_signal,
        metrics=metrics,
        group=submit_group,
    )
    submit_jobs = providers.Factory(
        SubmitJobs,
        jobs=job_repository,
        settings=policies,
        signal=job_signal,
        metrics=metrics,
    )
    claim_jobs = providers.Factory(ClaimJobs, jobs=job_repository, settings=policies)
    renew_leases = providers.Factory(RenewLeases, jobs=job_repository, settings=policies)
    release_jobs = providers.Factory(ReleaseJobs, jobs=job_repository)
    get_job = providers.Factory(GetJob, jobs=job_repository)
    list_jobs = providers.Factory(ListJobs, jobs=job_repository)
    cancel_job = providers.Factory(CancelJob, jobs=job_repository, metrics=metrics)
    retry_job = providers.Factory(RetryJob, jobs=job_repository)
    register_worker = providers.Factory(RegisterWorker, registry=worker_registry)
    heartbeat_worker = providers.Factory(HeartbeatWorker, registry=worker_registry)
    deregister_worker = providers.Factory(DeregisterWorker, registry=worker_registry)
    expire_leases = providers.Factory(ExpireLeases, jobs=job_repository)
    reap_dead_workers = providers.Factory(
        ReapDeadWorkers,
        registry=worker_registry,
        jobs=job_repository,
        settings=policies,
        metrics=metrics,
    )
    record_outcomes = providers.Factory(RecordOutcomes, jobs=job_repository, settings=policies)

    worker_use_cases = providers.Factory(
        WorkerUseCases,
        claim_jobs=claim_jobs,
        record_outcomes=record_outcomes,
        record_and_claim=providers.Factory(
            RecordAndClaim, record=record_outcomes, claim=claim_jobs
        ),
        renew_leases=renew_leases,
        release_jobs=release_jobs,
        register_worker=register_worker,
        heartbeat_worker=heartbeat_worker,
        deregister_worker=deregister_worker,
        reap_dead_workers=reap_dead_workers,
        expire_leases=expire_leases,
        get_fleet=get_fleet,
    )
    # called with consumers=...
    worker_runner = providers.Factory(
        WorkerRunner,
        uses=worker_use_cases,
        policies=policies,
        settings=worker_settings,
        metrics=metrics,
        tracer=worker_tracer,
        # Stand-ins for the process's store gate: claims, outcomes, releases and
        # maintenance on the main lane (2 threads for claims and outcomes, as many as
        # are ever in flight, and 1 for maintenance), heartbeats and renewals on a beat
        # lane of their own, so that a saturated main lane never delays a renewal.
        main_lane=providers.Resource(open_executor_lane, threads=3, name="vesper-store"),
        beat_lane=providers.Resource(open_executor_lane, threads=1, name="vesper-heartbeat"),
    )


def build_container(env: Mapping[str, str] | Settings) -> Container:
    """A container configured from environment variables (DESIGN.md's names)."""
    settings = env if isinstance(env, Settings) else Settings.from_env(env)
    container = Container()
    container.config.from_dict(
        {
            "storage": settings.storage,
            "storage_kind": settings.storage if settings.storage in BUILTIN_STORAGES else "plugin",
            "database_url": settings.database_url,
            "auto_migrate": settings.auto_migrate,
            "db_pool_size": settings.db_pool_size,
            "db_max_overflow": settings.db_max_overflow,
            "metrics_max_types": settings.metrics_max_types,
            "settings": settings,
        }
    )
    return container
