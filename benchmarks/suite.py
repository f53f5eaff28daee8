"""`vesper bench`: W1-W6 for vesper on PostgreSQL and SQLite, and W1-W4 for the peers
on the same PostgreSQL server, in one run. See docs/benchmarks.md.

Each workload runs `repeats` times per system, the systems interleaved within a round so
that a noisy machine hits them alike; the queue tables are emptied before every run.
Every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from benchmarks import http_burst, lifecycle, scale
from benchmarks.report import SHORT_JOB_SLOTS, machine, print_report, ratios, targets
from benchmarks.systems import (
    System,
    Worker,
    ensure_peers_venv,
    pgqueuer,
    procrastinate,
    vesper_postgres,
    vesper_sqlite,
    wait_for,
)

WORKLOADS = (
    "W1", "W1c", "W2", "W3", "W3x2", "W3q", "W3c", "W4", "W5", "W5x2", "W6", "W6s", "R1", "W7",
)  # fmt: skip
DEFAULT_WORKLOADS = WORKLOADS
PEER_WORKLOADS = ("W1", "W1c", "W2", "W3", "W3x2", "W4")  # the peers have no HTTP API (W5)
DRAIN_TIMEOUT = 180.0
READY_TIMEOUT = 60.0
# W6 counts the unfinished jobs through the status index: `status <> 'done'` would scan
# every finished row, 50 times a second, while the worker drains
UNFINISHED_SQL = (
    "SELECT count(*) FROM vesper_jobs WHERE status IN ('pending', 'processing', 'failed')"
)


@dataclass
class Config:
    single_jobs: int = 5_000
    concurrent_jobs: int = 10_000
    producers: int = 16
    batch_jobs: int = 10_000
    drain_jobs: int = 10_000
    pickup_jobs: int = 500
    pickup_rate: float = 100.0
    concurrency: int = 10
    repeats: int = 3
    # W5: POST /jobs bursts against one `vesper api` process (wrk); W5x2: two processes
    http_requests: int = 10_000
    http_connections: int = 256
    http_warmup: int = 500
    http_client_threads: int = 1
    http_timeout: float = 120.0
    # W6: claims and drain with a small and a large number of done rows in the table,
    # and a worker's RSS over a table of pending jobs
    scale_small: int = 10_000
    scale_large: int = 1_000_000
    scale_claims: int = 2_000  # claims per run, of one job and of `scale_batch` jobs
    scale_batch: int = 10
    scale_drain_jobs: int = 10_000
    rss_pending: int = 1_000_000
    rss_seconds: float = 30.0
    # R1 (benchmarks/lifecycle.py): retention under a drain
    retention_jobs: int = 10_000
    retain_s: float = 2.0
    prune_interval_s: float = 1.0
    # W6s: a table kept at steady state by retention under a continuous flow (one run)
    steady_minutes: float = 5.0
    steady_rate: float = 1_000.0
    steady_retain_s: float = 30.0
    steady_prune_interval_s: float = 5.0
    steady_naptime_s: float | None = None  # the autovacuum stand-in's; None: the server's
    # W7: concurrent GET /jobs/{id}?wait=
    wait_jobs: int = 500
    wait_s: float = 30.0


@dataclass
class Results:
    config: Config
    runs: dict[str, dict[str, list[dict[str, float]]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, workload: str, system: str, run: dict[str, float]) -> None:
        self.runs.setdefault(workload, {}).setdefault(system, []).append(run)

    def summary(self) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
        """workload -> system -> metric -> {median, min, max}."""
        out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
        for workload, systems in self.runs.items():
            for system, runs in systems.items():
                metrics = {key for run in runs for key in run}
                out.setdefault(workload, {})[system] = {
                    key: {
                        "median": statistics.median(values),
                        "min": min(values),
                        "max": max(values),
                        "n": len(values),
                    }
                    for key in sorted(metrics)
                    for values in [[run[key] for run in runs if key in run]]
                }
        return out


class Bench:
    def __init__(self, config: Config, work: Path, progress: Progress) -> None:
        self.config = config
        self.work = work
        self.progress = progress
        self.results = Results(config)

    # -- workloads, one run each ---------------------------------------------------------

    def enqueue_single(self, system: System) -> dict[str, float]:
        jobs = self.config.single_jobs
        seconds = system.run("enqueue-single", "--jobs", str(jobs))["seconds"]
        return {"jobs_per_s": jobs / seconds, "seconds": seconds}

    def enqueue_concurrent(self, system: System) -> dict[str, float]:
        jobs, producers = self.config.concurrent_jobs, self.config.producers
        seconds = system.run(
            "enqueue-concurrent", "--jobs", str(jobs), "--producers", str(producers)
        )["seconds"]
        return {"jobs_per_s": jobs / seconds, "seconds": seconds}

    def enqueue_batch(self, system: System) -> dict[str, float]:
        """W2: the batch in one call of the system's batch API."""
        jobs = self.config.batch_jobs
        seconds = system.run("enqueue-batch", "--jobs", str(jobs), "--chunk", str(jobs))["seconds"]
        return {"jobs_per_s": jobs / seconds, "seconds": seconds}

    def drain(
        self,
        system: System,
        processes: int,
        *,
        jobs: int | None = None,
        remaining_sql: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> dict[str, float]:
        jobs = jobs or self.config.drain_jobs
        with self.workers(system, processes, ledger=None, env=env):
            committed_at = system.run("fill", "--jobs", str(jobs))["committed_at"]
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while True:
                remaining = system.query(remaining_sql or system.remaining_sql)
                finished_at = time.time()
                if remaining == 0:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{system.name}: {remaining} jobs left after the timeout")
                time.sleep(0.02)
        seconds = finished_at - committed_at
        return {"jobs_per_s": jobs / seconds, "seconds": seconds}

    def drain_queued(self, system: System, *, concurrency: int | None) -> dict[str, float]:
        """W3 with named queues in use: the worker serves its queue by name (its own
        slots, the per-queue claim), and the queue has a settings row, limiting nothing
        (W3q) or with a `concurrency` limit that never binds (W3c: 1,000 over 10 slots,
        so every claim takes the limited path, under a lock on the queue's row)."""
        system.run("queue-default", "--limit", str(concurrency or 0))
        slots = {"VESPER_QUEUES": f"default={self.config.concurrency}"}
        return self.drain(system, 1, env=slots)

    def pickup(self, system: System) -> dict[str, float]:
        ledger = self.work / f"ledger-{system.name}-{time.monotonic_ns()}"
        jobs = self.config.pickup_jobs
        with self.workers(system, 1, ledger=ledger):
            time.sleep(1.0)  # idle, waiting on LISTEN (or its poll)
            enqueued = system.run(
                "produce", "--jobs", str(jobs), "--rate", str(self.config.pickup_rate)
            )["enqueued"]

            def started() -> dict[str, float]:
                seen: dict[str, float] = {}
                if ledger.exists():
                    for line in ledger.read_text().splitlines():
                        n, _, t = line.partition(" ")
                        if n in enqueued and t:
                            seen.setdefault(n, float(t))
                return seen

            wait_for(lambda: len(started()) >= len(enqueued), timeout=30, what="every start")
            starts = started()
        latencies = sorted((starts[n] - t) * 1000 for n, t in enqueued.items())
        return {
            "p50_ms": percentile(latencies, 0.50),
            "p95_ms": percentile(latencies, 0.95),
            "p99_ms": percentile(latencies, 0.99),
            "max_ms": latencies[-1],
        }

    def http_burst(self, system: System, processes: int) -> dict[str, float]:
        """W5: one burst of POST /jobs against a fresh `vesper api --processes N`."""
        run = http_burst.run_once(system, self.config, self.work, processes)
        stored = system.query("SELECT count(*) FROM vesper_jobs")
        if stored < run["requests"] - run["errors"]:
            raise RuntimeError(f"{stored} jobs stored for {run['requests']:.0f} answered")
        return run

    def scale(self, system: System, task: TaskID) -> None:
        """W6, all its runs: adds `repeats` runs to the results itself (seeding the large
        table once per size, not once per run).

        For each table size (small, large; done rows): claim latency of single-job claims
        and of claims of `scale_batch`, and the drain rate of one worker process; the rows
        each run adds are deleted again (and the table vacuumed) before the next. Then a
        table of `rss_pending` pending jobs, topped up before each run: the worker's
        peak RSS while it drains for `rss_seconds`.
        """
        config, url = self.config, system.url
        runs: list[dict[str, float]] = [{} for _ in range(config.repeats)]

        def step(what: str) -> None:
            self.progress.update(task, description=f"W6 {system.name} {what}")

        for label, rows in (("small", config.scale_small), ("large", config.scale_large)):
            step(f"seeding {rows:,} done rows")
            system.reset()
            seeded = scale.seed(url, "done", rows)
            scale.check_seeded(url)
            last_seeded = scale.scalar(url, "SELECT max(seq) FROM vesper_jobs")
            cleanup = (
                f"DELETE FROM vesper_jobs WHERE seq > {last_seeded}",
                "DELETE FROM vesper_workers",
                "VACUUM (ANALYZE) vesper_jobs",
            )
            for index, run in enumerate(runs):
                run[f"seed_s_{label}"] = seeded
                for limit, name in ((1, "claim1"), (config.scale_batch, "claim_batch")):
                    step(f"{rows:,} done: claims of {limit}, run {index + 1}")
                    claims = system.run(
                        "claim-latency",
                        "--jobs",
                        str(config.scale_claims * limit),
                        "--limit",
                        str(limit),
                    )["claims_ms"]
                    scale.execute(url, *cleanup)
                    if len(claims) < 10:
                        raise RuntimeError(f"W6: only {len(claims)} claims")
                    claims.sort()
                    run[f"{name}_p50_ms_{label}"] = percentile(claims, 0.50)
                    run[f"{name}_p99_ms_{label}"] = percentile(claims, 0.99)
                step(f"{rows:,} done: drain, run {index + 1}")
                drained = self.drain(
                    system, 1, jobs=config.scale_drain_jobs, remaining_sql=UNFINISHED_SQL
                )
                scale.execute(url, *cleanup)
                run[f"drain_jobs_per_s_{label}"] = drained["jobs_per_s"]
                self.progress.advance(task)

        pending = config.rss_pending
        step(f"seeding {pending:,} pending rows")
        system.reset()
        seeded = scale.seed(url, "pending", pending)
        scale.check_seeded(url)
        for index, run in enumerate(runs):
            missing = pending - scale.scalar(
                url, "SELECT count(*) FROM vesper_jobs WHERE status = 'pending'"
            )
            if missing > 0:
                step(f"topping up {missing:,} pending rows")
                scale.execute(url, "DELETE FROM vesper_jobs WHERE status <> 'pending'")
                scale.seed(url, "pending", missing, first=10 * pending + index * pending)
            scale.execute(url, "DELETE FROM vesper_workers")
            step(f"{pending:,} pending: worker RSS for {config.rss_seconds:.0f}s, run {index + 1}")
            run.update(self.worker_rss(system))
            run["seed_s_pending"] = seeded
            self.progress.advance(task)
        for run in runs:
            self.results.add("W6", system.name, run)

    def worker_rss(self, system: System) -> dict[str, float]:
        """A real `vesper worker` over the table as it is: its peak RSS (MiB) while it
        drains for `rss_seconds` (sampled VmRSS every 100 ms, and the kernel's VmHWM)."""
        peak_kib = 0
        with self.workers(system, 1, ledger=None) as started:
            pid = started[0].popen.pid
            first_kib, _ = scale.rss_kib(pid)
            deadline = time.monotonic() + self.config.rss_seconds
            while time.monotonic() < deadline and started[0].alive():
                rss, hwm = scale.rss_kib(pid)
                peak_kib = max(peak_kib, rss, hwm)
                time.sleep(0.1)
            if not started[0].alive():
                raise RuntimeError(f"{system.name}: the worker exited during the RSS run")
        done = system.query("SELECT count(*) FROM vesper_jobs WHERE status = 'done'")
        if done == 0:
            raise RuntimeError(f"{system.name}: the worker drained nothing in the RSS run")
        return {
            "rss_max_mb": peak_kib / 1024,
            "rss_ready_mb": first_kib / 1024,
            "rss_drained_jobs_per_s": done / self.config.rss_seconds,
        }

    @contextmanager
    def workers(
        self,
        system: System,
        processes: int,
        *,
        ledger: Path | None,
        env: Mapping[str, str] | None = None,
    ) -> Iterator[list[Worker]]:
        stamp = time.monotonic_ns()
        readies = [self.work / f"ready-{system.name}-{stamp}-{i}" for i in range(processes)]
        log = self.work / f"worker-{system.name}.log"
        started: list[Worker] = []
        try:
            for ready in readies:
                started.append(
                    system.worker(ready, ledger, log, self.config.concurrency, extra_env=env)
                )

            def ready() -> bool:
                if not all(w.alive() for w in started):
                    raise RuntimeError(f"{system.name}: a worker exited; see {log}")
                if system.ready_sql is not None:
                    return system.query(system.ready_sql) >= processes
                return all(path.exists() for path in readies)

            wait_for(ready, timeout=READY_TIMEOUT, what=f"{system.name} workers", interval=0.1)
            time.sleep(0.5)  # LISTEN set up, first (empty) claim done
            yield started
        finally:
            for worker in started:
                worker.stop()

    # -- the run ---------------------------------------------------------------------------

    def run(self, systems: list[System], workloads: list[str]) -> Results:
        plan: list[tuple[str, Callable[[System], dict[str, float]], list[System]]] = []
        table: dict[str, Callable[[System], dict[str, float]]] = {
            "W1": self.enqueue_single,
            "W1c": self.enqueue_concurrent,
            "W2": self.enqueue_batch,
            "W3": lambda s: self.drain(s, 1),
            "W3x2": lambda s: self.drain(s, 2),
            "W3q": lambda s: self.drain_queued(s, concurrency=None),
            "W3c": lambda s: self.drain_queued(s, concurrency=1000),
            "W4": self.pickup,
            "W5": lambda s: self.http_burst(s, 1),
            "W5x2": lambda s: self.http_burst(s, 2),
            "W6s": lambda s: lifecycle.steady(self, s),
            "R1": lambda s: lifecycle.retention(self, s),
            "W7": lambda s: lifecycle.waiting(self, s),
        }
        for workload in workloads:
            if workload in ("W5", "W5x2"):  # vesper only: the peers have no HTTP API
                targets = [s for s in systems if s.driver == "vesper_driver.py"]
            elif workload in ("W6", "W6s"):  # vesper on PostgreSQL only
                targets = [s for s in systems if s.name == "vesper"]
            elif workload in ("R1", "W7", "W3q", "W3c"):  # vesper only
                targets = [s for s in systems if s.driver == "vesper_driver.py"]
            else:
                targets = systems
            targets = [s for s in targets if s.workloads is None or workload in s.workloads]
            if targets:
                plan.append((workload, table.get(workload, _unused), targets))
        total = sum(
            len(targets) * _rounds(workload, self.config.repeats) for workload, _, targets in plan
        )
        if any(workload == "W6" for workload, _, _ in plan):
            total += 2 * self.config.repeats  # W6: three steps per run (small, large, RSS)
        task = self.progress.add_task("bench", total=total)
        for workload, function, targets in plan:
            if workload == "W6":
                for system in targets:
                    try:
                        self.scale(system, task)
                    except Exception as exc:  # reported; the other workloads go on
                        self.results.errors.append(f"W6 {system.name}: {exc}")
                continue
            for round_ in range(_rounds(workload, self.config.repeats)):
                for system in targets:
                    self.progress.update(
                        task, description=f"{workload} {system.name} run {round_ + 1}"
                    )
                    try:
                        system.reset()
                        self.results.add(workload, system.name, function(system))
                    except Exception as exc:  # one failed run is reported, the rest go on
                        self.results.errors.append(f"{workload} {system.name}: {exc}")
                    self.progress.advance(task)
        return self.results


def _rounds(workload: str, repeats: int) -> int:
    """W6s runs once: its minutes are its repeats."""
    return 1 if workload == "W6s" else repeats


def _unused(system: System) -> dict[str, float]:
    raise AssertionError("W6 runs through Bench.scale")


def percentile(ordered: list[float], fraction: float) -> float:
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def run_bench(
    *,
    peers: bool,
    stores: list[str],
    workloads: list[str],
    config: Config,
    json_path: Path | None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the suite and print the tables; returns the JSON document."""
    from vesper.testing.postgres import admin_url, scratch_database  # noqa: PLC0415

    console = console or Console(width=max(Console().width, 150))
    if peers:
        ensure_peers_venv(console.print)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vesper-bench-")))
        systems: list[System] = []
        pg_url = ""
        if "postgres" in stores or peers:
            scratch = stack.enter_context(scratch_database(admin_url(), prefix="vesper_bench_"))
            pg_url = scratch.replace("postgresql+psycopg://", "postgresql://", 1)
        if "postgres" in stores:
            systems.append(vesper_postgres(pg_url))
            systems.append(vesper_postgres(pg_url, slots=SHORT_JOB_SLOTS))
        if "sqlite" in stores:
            systems.append(vesper_sqlite(work / "bench.db"))
        if peers and any(w in PEER_WORKLOADS for w in workloads):
            systems += [
                procrastinate(pg_url),
                pgqueuer(pg_url),
                # pgqueuer's tuning guide: a larger batch_size for short jobs (its example)
                pgqueuer(pg_url, batch_size=25),
                pgqueuer(pg_url, "psycopg"),
            ]
        for system in systems:
            system.run("setup", timeout=120)
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())  # fmt: skip
        with Progress(*columns, console=console, transient=True) as progress:
            results = Bench(config, work, progress).run(systems, workloads)
        document: dict[str, Any] = {
            "machine": machine(pg_url or None),
            "python": platform.python_version(),
            "config": config.__dict__,
            "systems": [s.name for s in systems],
            "runs": results.runs,
            "summary": results.summary(),
            "errors": results.errors,
        }
        document["ratios"] = ratios(document["summary"])
        document["targets"] = targets(document["summary"])
    print_report(document, console)
    if json_path is not None:
        # benchmarks/results/ is not in a fresh clone: a full run must not end in a traceback
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(document, indent=2) + "\n")
        console.print(f"JSON written to {json_path}")
    return document
