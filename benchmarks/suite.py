"""`vesper bench`: W1-W4 for vesper on PostgreSQL and SQLite, and for the peers
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
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.report import machine, print_report, ratios
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

WORKLOADS = ("W1", "W2", "W3", "W3x2", "W4")  # W5 (HTTP burst), W6 (scale): not yet
DEFAULT_WORKLOADS = ("W1", "W2", "W3", "W3x2", "W4")
DRAIN_TIMEOUT = 180.0
READY_TIMEOUT = 60.0


@dataclass
class Config:
    single_jobs: int = 5_000
    batch_jobs: int = 10_000
    drain_jobs: int = 10_000
    pickup_jobs: int = 500
    pickup_rate: float = 100.0
    concurrency: int = 10
    repeats: int = 3
    http_requests: int = 10_000
    http_connections: int = 256


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

    def enqueue_batch(self, system: System) -> dict[str, float]:
        jobs = self.config.batch_jobs
        seconds = system.run("enqueue-batch", "--jobs", str(jobs))["seconds"]
        return {"jobs_per_s": jobs / seconds, "seconds": seconds}

    def drain(self, system: System, processes: int) -> dict[str, float]:
        jobs = self.config.drain_jobs
        with self.workers(system, processes, ledger=None):
            committed_at = system.run("fill", "--jobs", str(jobs))["committed_at"]
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while True:
                remaining = system.query(system.remaining_sql)
                finished_at = time.time()
                if remaining == 0:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{system.name}: {remaining} jobs left after the timeout")
                time.sleep(0.02)
        seconds = finished_at - committed_at
        return {"jobs_per_s": jobs / seconds, "seconds": seconds}

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

    @contextmanager
    def workers(self, system: System, processes: int, *, ledger: Path | None) -> Iterator[None]:
        stamp = time.monotonic_ns()
        readies = [self.work / f"ready-{system.name}-{stamp}-{i}" for i in range(processes)]
        log = self.work / f"worker-{system.name}.log"
        started: list[Worker] = []
        try:
            for ready in readies:
                started.append(system.worker(ready, ledger, log, self.config.concurrency))

            def ready() -> bool:
                if not all(w.alive() for w in started):
                    raise RuntimeError(f"{system.name}: a worker exited; see {log}")
                if system.ready_sql is not None:
                    return system.query(system.ready_sql) >= processes
                return all(path.exists() for path in readies)

            wait_for(ready, timeout=READY_TIMEOUT, what=f"{system.name} workers", interval=0.1)
            time.sleep(0.5)  # LISTEN set up, first (empty) claim done
            yield
        finally:
            for worker in started:
                worker.stop()

    # -- the run ---------------------------------------------------------------------------

    def run(self, systems: list[System], workloads: list[str]) -> Results:
        plan: list[tuple[str, Callable[[System], dict[str, float]], list[System]]] = []
        table: dict[str, Callable[[System], dict[str, float]]] = {
            "W1": self.enqueue_single,
            "W2": self.enqueue_batch,
            "W3": lambda s: self.drain(s, 1),
            "W3x2": lambda s: self.drain(s, 2),
            "W4": self.pickup,
        }
        for workload in workloads:
            plan.append((workload, table[workload], systems))
        total = sum(len(targets) for _, _, targets in plan) * self.config.repeats
        task = self.progress.add_task("bench", total=total)
        for workload, function, targets in plan:
            for round_ in range(self.config.repeats):
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
        if "sqlite" in stores:
            systems.append(vesper_sqlite(work / "bench.db"))
        if peers:
            systems += [procrastinate(pg_url), pgqueuer(pg_url)]
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
    print_report(document, console)
    if json_path is not None:
        json_path.write_text(json.dumps(document, indent=2) + "\n")
        console.print(f"JSON written to {json_path}")
    return document
