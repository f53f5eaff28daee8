"""The composition root: the only place that knows the concrete classes.

Everything concrete is built here: the store (by storage kind, or a plugin), the
process's store gate (sized by the capacity the store reports when it opens), the
group commit around the store's repository, the use cases, the metrics and what they
observe, the tracer provider, the subscription to the store's notifier and the worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

from dependency_injector import containers, providers

from vesper.adapters.clock import SystemClock
from vesper.adapters.memory import InMemoryStore
from vesper.adapters.otel.metrics import OtelMetrics
from vesper.adapters.otel.tracing import install_global_tracer_provider, open_tracer_provider
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
from vesper.application.group_commit import CoalescingJobRepository, GroupCommit
from vesper.application.management import (
    BulkJobs,
    CancelJob,
    GetActivity,
    GetJob,
    GetStats,
    GetSummary,
    ListJobs,
    RetryJob,
)
from vesper.application.periodic import (
    DeleteSchedule,
    ListSchedules,
    PauseSchedule,
    PeriodicScheduler,
    replay_window_for,
)
from vesper.application.ports import (
    Clock,
    JobRepository,
    ScheduleRegistry,
    Store,
    StoreOptions,
    Subscription,
    TransactionalJobRepository,
    WorkerRegistry,
    store_capacity,
    store_notifier,
    store_pools,
    store_schedules,
)
from vesper.application.queues import ConfigureQueue, GetQueue, ListQueues
from vesper.application.retention import DeleteJob, PruneJobs
from vesper.application.store_gate import STORE_WAIT_S, StoreGate
from vesper.application.submit import (
    SubmitInTransaction,
    SubmitJob,
    SubmitJobs,
    TypeDefaults,
    no_routes,
)
from vesper.application.waiting import JobWaits
from vesper.domain.errors import StoreUnavailable
from vesper.entrypoints.settings import BUILTIN_STORAGES, Settings, load_storage_plugin
from vesper.entrypoints.worker import WorkerRunner, WorkerUseCases

log = logging.getLogger("vesper")
T = TypeVar("T")

# The lane for heartbeats and lease renewals (the worker's beat lane): its own threads,
# never behind the store gate (on PostgreSQL they have a pool of their own, 1 + 2).
BEAT_THREADS = 2


def open_memory_store(clock: Clock) -> Iterator[Store]:
    yield InMemoryStore(clock)


def open_sql_store(url: str, clock: Clock, options: StoreOptions) -> Iterator[Store]:
    """The SQL store; its main pool (PostgreSQL) has `pool_size` + `max_overflow`
    connections (VESPER_DB_POOL_SIZE, VESPER_DB_MAX_OVERFLOW). Heartbeats and lease
    renewals keep their own small pool, whatever these are."""
    from vesper.adapters.sql import open_store  # noqa: PLC0415 (SQLAlchemy loads only when chosen)

    store = open_store(url, clock, options)
    try:
        yield store
    finally:
        store.close()


def open_plugin_store(name: str, url: str, clock: Clock, options: StoreOptions) -> Iterator[Store]:
    """A third-party store, from the entry point `name` of the group `vesper.storage`."""
    factory = load_storage_plugin(name)
    store = factory(url, clock, options)
    try:
        yield store
    finally:
        store.close()


STORE_OPEN_WAIT_S = 5.0  # a caller waits this long for another thread opening the store


def open_once(open_store: Callable[[], Store], lock: threading.Lock, gate: StoreGate) -> Store:
    """The store, opened by one thread at a time; the gate admits as many calls at
    once as the store reports it can serve.

    The store's resource is not thread-safe: first uses in several threads at once (the
    workers waiting for the database and the API's first requests, in `vesper serve`)
    would each open a store, and all but one would leak their connection pools.
    """
    if not lock.acquire(timeout=STORE_OPEN_WAIT_S):
        raise StoreUnavailable("the store is still being opened")
    try:
        store = open_store()
    finally:
        lock.release()
    gate.limit(store_capacity(store))  # unchanged but when the store was just opened
    return store


def open_metrics(
    get_stats: Callable[[], GetStats],
    get_fleet: Callable[[], GetFleet],
    list_queues: Callable[[], ListQueues],
    store: Callable[[], Store],
    gate: StoreGate,
    max_types: int,
) -> Iterator[OtelMetrics]:
    """Metrics of this process; the store opens at the first scrape, not before, and
    the scrape's store reads go through the gate like every other call."""
    metrics = OtelMetrics(max_types=max_types)
    metrics.observe_queue(lambda: gate.call(get_stats(), deadline=gate.deadline()))
    metrics.observe_fleet(lambda: gate.call(get_fleet(), deadline=gate.deadline()))

    def unserved() -> dict[str, int]:
        views = gate.call(list_queues(), deadline=gate.deadline())
        return {view.state.name: len(view.unserved_types) for view in views}

    metrics.observe_unserved(unserved)
    metrics.observe_pools(lambda: store_pools(store()))
    try:
        yield metrics
    finally:
        metrics.shutdown()


def serve_metrics(addr: tuple[str, int] | None, metrics: OtelMetrics) -> Iterator[bool]:
    """A worker-only process serves /metrics on VESPER_METRICS_ADDR (`:9100`), if set
    (a daemon thread: it ends with the process). Yields whether it serves."""
    if addr is None:
        yield False
        return
    from prometheus_client import start_http_server  # noqa: PLC0415

    host, port = addr
    try:
        start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise SystemExit(
            f"vesper: cannot listen on {host}:{port} (VESPER_METRICS_ADDR): {exc.strerror}"
        ) from None
    log.info("metrics on http://%s:%d/metrics", host, port)
    yield True


def open_listener(
    store: Callable[[], Store], signal: LocalJobSignal, metrics: OtelMetrics
) -> Iterator[Subscription | None]:
    """Subscribe to the store's notifier, if it has one (PostgreSQL: LISTEN), and wake
    this process's workers at each notification; without one they poll. Opens the
    store: call it once the store is reachable."""
    notifier = store_notifier(store())
    if notifier is None:
        yield None
        return
    subscription = notifier.subscribe(signal.notify)
    metrics.observe_listener(subscription.connected, lambda: subscription.reconnects)
    try:
        yield subscription
    finally:
        subscription.close()


# Without notifications (SQLite, memory, plugins) waiters' jobs are read this often;
# with them (PostgreSQL), this is only the backstop for a notification lost meanwhile.
WAIT_POLL_S = 0.05
WAIT_POLL_NOTIFIED_S = 1.0


def open_job_waits(
    storage: str, url: str, jobs: JobRepository, gate: StoreGate
) -> Iterator[JobWaits]:
    """The process's one JobWaits, opened at the first wait; on PostgreSQL with a
    listener of its own (one connection, whatever the number of waiters)."""
    notified = storage == "postgres"
    waits = JobWaits(
        jobs,
        lambda read: gate.call(read, deadline=gate.deadline()),
        poll=WAIT_POLL_NOTIFIED_S if notified else WAIT_POLL_S,
    )
    listener = None
    if notified:
        from vesper.adapters.sql.notify import (  # noqa: PLC0415
            FINISHED_CHANNEL,
            WAITERS_LOCK_SQL,
            PostgresJobListener,
            finished_ids,
        )

        # the lock tells the outcome statements that this process listens (notify.py)
        listener = PostgresJobListener(
            url,
            waits.poke,
            channel=FINISHED_CHANNEL,
            after_listen=WAITERS_LOCK_SQL,
            on_payloads=lambda payloads: waits.poke(finished_ids(payloads)),
        ).start()
    try:
        yield waits
    finally:
        if listener is not None:
            listener.stop()
        waits.close()


def locked(resolve: Callable[[], T], lock: threading.Lock) -> T:
    """`resolve()` under `lock`: a Resource provider is not safe to initialize from
    several threads at once (a hundred first app.wait calls)."""
    with lock:
        return resolve()


def observed_runner(
    consumers: Any,
    make_runner: Callable[..., WorkerRunner],
    metrics: OtelMetrics,
    make_scheduler: Callable[..., PeriodicScheduler],
    schedules: Any = (),
) -> WorkerRunner:
    """The worker runner for `consumers` (and the periodic `schedules` it fires), its
    busy slots observed by the metrics."""
    scheduler = make_scheduler(schedules=schedules) if schedules else None
    runner = make_runner(consumers=consumers, scheduler=scheduler)
    metrics.observe_busy_slots(lambda: runner.busy)
    return runner


def _jobs(store: Store) -> JobRepository:
    return store.jobs


def _workers(store: Store) -> WorkerRegistry:
    return store.workers


def _schedules(store: Store) -> ScheduleRegistry | None:
    return store_schedules(store)


def _transactional(store: Store, storage: str) -> TransactionalJobRepository:
    """The store's repository, if it can write in its caller's transaction."""
    jobs = store.jobs
    if not jobs.capabilities.transactional_submit:
        raise TypeError(
            f"connection: the {storage} store cannot write in your transaction; "
            "use VESPER_STORAGE=postgres or sqlite"
        )
    return cast(TransactionalJobRepository, jobs)


class Container(containers.DeclarativeContainer):
    config = providers.Configuration(strict=True)

    clock = providers.Singleton(SystemClock)
    # one per process: sized when the store opens (open_once); the worker's main lane
    store_gate = providers.ThreadSafeSingleton(StoreGate, wait=config.store_wait)
    beat_lane = providers.ThreadSafeSingleton(
        StoreGate, None, threads=BEAT_THREADS, name="vesper-beat"
    )
    opened_store = providers.Selector(
        config.storage_kind,
        memory=providers.Resource(open_memory_store, clock=clock),
        sqlite=providers.Resource(
            open_sql_store, url=config.database_url, clock=clock, options=config.store_options
        ),
        postgres=providers.Resource(
            open_sql_store, url=config.database_url, clock=clock, options=config.store_options
        ),
        plugin=providers.Resource(
            open_plugin_store,
            name=config.storage,
            url=config.database_url,
            clock=clock,
            options=config.store_options,
        ),
    )
    store_lock = providers.ThreadSafeSingleton(threading.Lock)
    store = providers.Callable(open_once, opened_store.provider, store_lock, store_gate)
    job_repository = providers.Callable(_jobs, store)  # the store's own
    worker_registry = providers.Callable(_workers, store)
    schedule_registry = providers.Callable(_schedules, store)  # None: the store keeps none
    group_commit = providers.ThreadSafeSingleton(
        GroupCommit,
        gate=store_gate,
        max_batch=providers.Callable(lambda s: s.policies.limits.max_batch, config.settings),
    )
    # what the use cases get: the store's repository, its submissions committed together
    jobs = providers.Factory(CoalescingJobRepository, jobs=job_repository, group=group_commit)
    policies = providers.Callable(lambda s: s.policies, config.settings)
    worker_settings = providers.Callable(lambda s: s.worker, config.settings)
    job_signal = providers.Singleton(LocalJobSignal)
    get_stats = providers.Factory(GetStats, jobs=jobs)
    get_fleet = providers.Factory(GetFleet, registry=worker_registry)
    metrics = providers.Resource(
        open_metrics,
        get_stats=get_stats.provider,
        get_fleet=get_fleet.provider,
        list_queues=providers.Factory(ListQueues, jobs=jobs, registry=worker_registry).provider,
        store=store.provider,
        gate=store_gate,
        max_types=config.metrics_max_types,
    )
    metrics_server = providers.Resource(serve_metrics, addr=config.metrics_addr, metrics=metrics)
    job_listener = providers.Resource(
        open_listener, store=store.provider, signal=job_signal, metrics=metrics
    )
    job_waits = providers.Resource(
        open_job_waits,
        storage=config.storage,
        url=config.database_url,
        jobs=job_repository,
        gate=store_gate,
    )
    waits_lock = providers.ThreadSafeSingleton(threading.Lock)
    # what callers resolve: the one JobWaits, opened by one thread
    shared_job_waits = providers.Callable(locked, job_waits.provider, waits_lock)
    tracer_provider = providers.Resource(open_tracer_provider, env=config.otel)
    # `vesper serve`: the spans consumers open themselves go where vesper's go
    global_tracing = providers.Callable(install_global_tracer_provider, tracer_provider)
    worker_tracer = providers.Callable(lambda p: p.get_tracer("vesper.worker"), tracer_provider)

    # the queue of a type's consumer, for jobs submitted without one: a vesper.App
    # overrides it with its consumers' (vesper api alone knows none: "default")
    queue_routes = providers.Object(no_routes)
    # the consumers' max_retries by job type: `vesper.App` sets its consumers' here
    type_defaults: providers.Provider[TypeDefaults | None] = providers.Object(None)
    submit_job = providers.Factory(
        SubmitJob,
        jobs=jobs,
        settings=policies,
        signal=job_signal,
        metrics=metrics,
        routes=queue_routes,
        type_defaults=type_defaults,
    )
    submit_jobs = providers.Factory(
        SubmitJobs,
        jobs=jobs,
        settings=policies,
        signal=job_signal,
        metrics=metrics,
        routes=queue_routes,
        type_defaults=type_defaults,
    )
    # `app.enqueue(..., connection=conn)`: the store's own repository, on the caller's
    # connection (neither the group commit nor the gate: no pooled connection is used)
    submit_in_transaction = providers.Factory(
        SubmitInTransaction,
        jobs=providers.Callable(_transactional, store, config.storage),
        settings=policies,
        signal=job_signal,
        metrics=metrics,
        routes=queue_routes,
        type_defaults=type_defaults,
    )
    claim_jobs = providers.Factory(ClaimJobs, jobs=jobs, settings=policies)
    renew_leases = providers.Factory(RenewLeases, jobs=jobs, settings=policies)
    release_jobs = providers.Factory(ReleaseJobs, jobs=jobs)
    get_job = providers.Factory(GetJob, jobs=jobs)
    list_jobs = providers.Factory(ListJobs, jobs=jobs)
    cancel_job = providers.Factory(CancelJob, jobs=jobs, metrics=metrics)
    retry_job = providers.Factory(RetryJob, jobs=jobs)
    list_queues = providers.Factory(ListQueues, jobs=jobs, registry=worker_registry)
    get_queue = providers.Factory(GetQueue, queues=list_queues)
    configure_queue = providers.Factory(ConfigureQueue, get_queue=get_queue)
    bulk_jobs = providers.Factory(BulkJobs, jobs=jobs, metrics=metrics)
    get_activity = providers.Factory(GetActivity, jobs=jobs)
    get_summary = providers.Factory(GetSummary, jobs=jobs)
    register_worker = providers.Factory(RegisterWorker, registry=worker_registry)
    heartbeat_worker = providers.Factory(HeartbeatWorker, registry=worker_registry)
    deregister_worker = providers.Factory(DeregisterWorker, registry=worker_registry)
    expire_leases = providers.Factory(ExpireLeases, jobs=jobs)
    reap_dead_workers = providers.Factory(
        ReapDeadWorkers,
        registry=worker_registry,
        jobs=jobs,
        settings=policies,
        metrics=metrics,
    )
    record_outcomes = providers.Factory(RecordOutcomes, jobs=jobs, settings=policies)
    list_schedules = providers.Factory(
        ListSchedules, jobs=jobs, registry=schedule_registry, settings=policies
    )
    pause_schedule = providers.Factory(
        PauseSchedule, jobs=jobs, registry=schedule_registry, settings=policies
    )
    delete_schedule = providers.Factory(DeleteSchedule, registry=schedule_registry)
    retention = providers.Callable(lambda s: s.retention, config.settings)
    # called with schedules=...
    periodic_scheduler = providers.Factory(
        PeriodicScheduler,
        jobs=jobs,
        registry=schedule_registry,
        submit=submit_job,
        replay_window=providers.Callable(lambda r: replay_window_for(r.ages), retention),
    )
    prune_jobs = providers.Factory(PruneJobs, jobs=jobs, retention=retention, metrics=metrics)
    delete_job = providers.Factory(DeleteJob, jobs=jobs)

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
        prune_jobs=prune_jobs,
    )
    # called with consumers=...
    worker_runner = providers.Factory(
        WorkerRunner,
        uses=worker_use_cases,
        policies=policies,
        settings=worker_settings,
        metrics=metrics,
        tracer=worker_tracer,
        # claims, outcomes, releases and maintenance through the process's one store
        # gate (shared with the API in `vesper serve`); heartbeats and renewals on a
        # lane of their own, so that a saturated gate never delays a renewal
        main_lane=store_gate,
        beat_lane=beat_lane,
    )
    # the runner the service runs, observed (busy slots); called with consumers=...
    # (and schedules=...)
    worker = providers.Factory(
        observed_runner,
        make_runner=worker_runner.provider,
        metrics=metrics,
        make_scheduler=periodic_scheduler.provider,
    )


def build_container(env: Mapping[str, str] | Settings) -> Container:
    """A container configured from environment variables (the README's names)."""
    settings = env if isinstance(env, Settings) else Settings.from_env(env)
    container = Container()
    container.config.from_dict(
        {
            "storage": settings.storage,
            "storage_kind": settings.storage if settings.storage in BUILTIN_STORAGES else "plugin",
            "database_url": settings.database_url,
            "store_options": settings.store_options,
            "metrics_max_types": settings.metrics_max_types,
            "metrics_addr": settings.metrics_addr,
            "otel": dict(settings.otel),
            "store_wait": STORE_WAIT_S,
            "settings": settings,
        }
    )
    return container
