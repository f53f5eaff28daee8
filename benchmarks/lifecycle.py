"""The workloads of a job's whole life (issue 16): retention and waiting.

R1   retention under a drain (PostgreSQL and SQLite): a `vesper worker` with
     VESPER_RETAIN_DONE=2s and VESPER_PRUNE_INTERVAL=1s drains 10,000 jobs (A), then
     10,000 more (B) are queued at once; while B drains, the pruner deletes A (and B's
     own jobs as they pass 2 s). The same run with retention off (`forever`) gives the
     drain rate without pruning. Figures: both rates and their ratio, the time from A's
     last finished_at until no job of A is left, and the age of the oldest job of A seen
     (polled every 20 ms) against the bound, retention + one prune interval.
W6s  steady state (PostgreSQL): a producer queues a continuous flow (1,000 jobs/s, in
     batches every 20 ms) for some minutes; one worker drains it and prunes with
     VESPER_RETAIN_DONE=30s. Sampled every 10 s: row count, pg_total_relation_size,
     dead tuples; and the pickup latency (started_at - created_at, both the server's
     clock) of every job claimed since the last sample. Figures per minute. With the
     server's autovacuum off, the harness VACUUMs the table every 30 s in its stead.
W7   waiting: 500 jobs queued with no worker up, 500 concurrent
     `GET /jobs/{id}?wait=30s` (one connection each) against one `vesper api` process,
     then a worker drains them. Latency: the client's clock when the answer's last byte
     arrived minus the job's finished_at (same machine). The database's connections
     (pg_stat_activity of the scratch database, the sampler's own left out) are sampled
     every 20 ms: while the 500 wait (the API alone), and over the whole run.

Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import subprocess
import threading
import time
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from benchmarks.http_burst import ApiProcess
from benchmarks.systems import REPO, System, wait_for

if TYPE_CHECKING:
    from benchmarks.suite import Bench

POLL_S = 0.02
DRAIN_TIMEOUT = 180.0


def fetch(system: System, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...]:
    """The first row of a query (SQLite: `?` placeholders; PostgreSQL: `%s`)."""
    if system.sqlite:
        with sqlite3.connect(system.url.removeprefix("sqlite:///"), timeout=30) as conn:
            return tuple(conn.execute(sql, params).fetchone())
    import psycopg  # noqa: PLC0415

    with psycopg.connect(system.url, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
        return tuple(row) if row else ()


def epoch(system: System, column: str) -> str:
    """SQL for a timestamp column as seconds since the epoch (float)."""
    if system.sqlite:  # 'YYYY-MM-DD HH:MM:SS.ffffff' UTC text
        return f"((julianday({column}) - 2440587.5) * 86400.0)"
    return f"extract(epoch FROM {column})::float8"


def with_env(system: System, **env: str) -> System:
    return replace(system, env={**system.env, **env})


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


# -- R1: retention under a drain -------------------------------------------------------------


def retention(bench: Bench, system: System) -> dict[str, float]:
    """One R1 run: the drain with retention off and with it on (each on an empty table)."""
    config = bench.config
    keeping = with_env(system, VESPER_RETAIN_DONE="forever")
    pruning = with_env(
        system,
        VESPER_RETAIN_DONE=f"{config.retain_s:g}s",
        VESPER_PRUNE_INTERVAL=f"{config.prune_interval_s:g}s",
    )
    # the halves take turns going first, run after run: a cold first half hits both
    if len(bench.results.runs.get("R1", {}).get(system.name, [])) % 2 == 0:
        keep = _retention_half(bench, keeping, prune=False)
        prune = _retention_half(bench, pruning, prune=True)
    else:
        prune = _retention_half(bench, pruning, prune=True)
        keep = _retention_half(bench, keeping, prune=False)
    return {
        "drain_keep_jobs_per_s": keep["jobs_per_s"],
        "drain_prune_jobs_per_s": prune["jobs_per_s"],
        "ratio": prune["jobs_per_s"] / keep["jobs_per_s"],
        "gone_s": prune["gone_s"],
        "max_age_s": prune["max_age_s"],
        "bound_s": config.retain_s + config.prune_interval_s,
        # A's last job waited gone_s at most, the others max_age_s
        "age_over_bound_s": max(prune["max_age_s"], prune["gone_s"])
        - (config.retain_s + config.prune_interval_s),
    }


def _retention_half(bench: Bench, system: System, *, prune: bool) -> dict[str, float]:
    jobs = bench.config.retention_jobs
    unfinished = "SELECT count(*) FROM vesper_jobs WHERE status <> 'done'"
    system.reset()
    with bench.workers(system, 1, ledger=None):
        # A: jobs the worker finishes now, to be pruned while B drains
        system.run("fill", "--jobs", str(jobs))
        wait_for(lambda: system.query(unfinished) == 0, timeout=DRAIN_TIMEOUT, what="A drained")
        (last_seq, last_finished) = fetch(
            system, f"SELECT max(seq), max({epoch(system, 'finished_at')}) FROM vesper_jobs"
        )
        a_left = (
            f"SELECT count(*), min({epoch(system, 'finished_at')}) FROM vesper_jobs"
            f" WHERE seq <= {int(last_seq)}"
        )
        # B: queued in one transaction; its drain is timed as W3's. A is watched from
        # now on, while the driver that queues B starts up
        filled: dict[str, Any] = {}
        filler = threading.Thread(
            target=lambda: filled.update(system.run("fill", "--jobs", str(jobs))), daemon=True
        )
        filler.start()
        committed_at: float | None = None
        deadline = time.monotonic() + DRAIN_TIMEOUT
        finished_at: float | None = None
        gone_at: float | None = None
        max_age = 0.0
        while finished_at is None or (prune and gone_at is None):
            if committed_at is None and not filler.is_alive():
                if "committed_at" not in filled:
                    raise RuntimeError(f"R1 {system.name}: queueing B failed")
                committed_at = float(filled["committed_at"])
            if committed_at is not None and finished_at is None and system.query(unfinished) == 0:
                finished_at = time.time()
            if prune and gone_at is None:
                left, oldest = fetch(system, a_left)
                now = time.time()
                if left == 0:
                    gone_at = now
                else:
                    max_age = max(max_age, now - float(oldest))
            if time.monotonic() > deadline:
                raise TimeoutError(f"R1 {system.name}: B not drained or A not pruned in time")
            time.sleep(POLL_S)
    assert committed_at is not None
    result = {"jobs_per_s": jobs / (finished_at - committed_at)}
    if prune:
        assert gone_at is not None
        result |= {"gone_s": gone_at - float(last_finished), "max_age_s": max_age}
    return result


# -- W6s: steady state under a continuous flow -------------------------------------------------


STEADY_SAMPLE_S = 10.0
# With the server's autovacuum off (as on the bench's machines), the harness VACUUMs the
# table this often in its stead: without any vacuum, deleted rows' space is never reused.
STEADY_VACUUM_S = 30.0


def steady(bench: Bench, system: System) -> dict[str, float]:
    """One W6s run; per-minute figures as `<metric>_m<minute>`, plus the run's summary."""
    config = bench.config
    seconds = config.steady_minutes * 60
    system.reset()
    worker_system = with_env(
        system,
        VESPER_RETAIN_DONE=f"{config.steady_retain_s:g}s",
        VESPER_PRUNE_INTERVAL=f"{config.steady_prune_interval_s:g}s",
    )
    samples: list[dict[str, float]] = []
    latencies: list[tuple[float, float]] = []  # (seconds into the run, pickup ms)
    log = bench.work / "flow.log"
    with bench.workers(worker_system, 1, ledger=None), log.open("ab") as out:
        import psycopg  # noqa: PLC0415

        producer = subprocess.Popen(
            system.command(
                "flow", "--rate", f"{config.steady_rate:g}", "--seconds", f"{seconds:g}"
            ),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        started = time.time()
        since = started
        vacuum_every = STEADY_VACUUM_S
        try:
            with psycopg.connect(system.url, autocommit=True) as conn:
                next_at = time.monotonic() + STEADY_SAMPLE_S
                row = conn.execute("SHOW autovacuum").fetchone()
                vacuum_every = 0 if row and row[0] == "on" else STEADY_VACUUM_S
                vacuumed_at = time.monotonic()
                while producer.poll() is None and time.time() - started < seconds + 60:
                    time.sleep(max(0.0, next_at - time.monotonic()))
                    next_at += STEADY_SAMPLE_S
                    if vacuum_every and time.monotonic() - vacuumed_at >= vacuum_every:
                        conn.execute("VACUUM vesper_jobs")  # autovacuum's stand-in
                        vacuumed_at = time.monotonic()
                    # jobs claimed since the last sample (up to 1 s ago: claims in flight)
                    upto = time.time() - 1.0
                    rows = conn.execute(
                        "SELECT extract(epoch FROM started_at)::float8,"
                        " extract(epoch FROM started_at - created_at)::float8 * 1000"
                        " FROM vesper_jobs WHERE started_at > to_timestamp(%s)"
                        " AND started_at <= to_timestamp(%s)",
                        (since, upto),
                    ).fetchall()
                    since = upto
                    latencies += [(t - started, ms) for t, ms in rows]
                    count, size, dead = conn.execute(
                        "SELECT (SELECT count(*) FROM vesper_jobs),"
                        " pg_total_relation_size('vesper_jobs'),"
                        " (SELECT n_dead_tup FROM pg_stat_user_tables"
                        "  WHERE relname = 'vesper_jobs')"
                    ).fetchone() or (0, 0, 0)
                    samples.append(
                        {
                            "t": time.time() - started,
                            "rows": float(count),
                            "size_mb": size / 2**20,
                            "dead": float(dead or 0),
                        }
                    )
        finally:
            if producer.poll() is None:
                producer.terminate()
            producer.wait(timeout=30)
    if producer.returncode != 0:
        raise RuntimeError(f"W6s: the producer failed; see {log}")
    out = _per_minute(samples, latencies, math.ceil(config.steady_minutes))
    out["harness_vacuum_s"] = float(vacuum_every)
    return out


def _per_minute(
    samples: list[dict[str, float]], latencies: list[tuple[float, float]], minutes: int
) -> dict[str, float]:
    out: dict[str, float] = {}
    for minute in range(1, minutes + 1):
        window = [s for s in samples if minute - 1 < s["t"] / 60 <= minute]
        picked = [ms for t, ms in latencies if minute - 1 < t / 60 <= minute]
        if not window or not picked:
            continue
        out[f"rows_m{minute}"] = max(s["rows"] for s in window)
        out[f"size_mb_m{minute}"] = max(s["size_mb"] for s in window)
        out[f"dead_m{minute}"] = max(s["dead"] for s in window)
        out[f"jobs_per_s_m{minute}"] = len(picked) / 60
        out[f"p50_ms_m{minute}"] = percentile(picked, 0.50)
        out[f"p99_ms_m{minute}"] = percentile(picked, 0.99)
        out[f"max_ms_m{minute}"] = max(picked)
    done = sorted(int(key.removeprefix("rows_m")) for key in out if key.startswith("rows_m"))
    if len(done) < 2:
        raise RuntimeError("W6s: fewer than two minutes sampled (run at least 3 minutes)")
    # the first minute fills the table up to retention: compare the last with the second
    first, last = done[1], done[-1]
    for metric in ("rows", "size_mb", "p50_ms", "p99_ms"):
        out[f"{metric}_last"] = out[f"{metric}_m{last}"]
        out[f"{metric}_growth"] = out[f"{metric}_m{last}"] / out[f"{metric}_m{first}"]
    out["minutes"] = float(last)
    return out


# -- W7: many waiters ---------------------------------------------------------------------------


def waiting(bench: Bench, system: System) -> dict[str, float]:
    config = bench.config
    jobs = config.wait_jobs
    system.reset()
    system.run("fill", "--jobs", str(jobs))
    ids = _ids(system)
    api = ApiProcess(system, bench.work / f"api-{system.name}.log")
    connections: list[tuple[float, int]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_connections, args=(system, connections, stop))
    try:
        api.wait_ready()
        sampler.start()
        client = _Waiters(api.port, ids, config.wait_s)
        client.start()
        wait_for(client.sent.is_set, timeout=30, what="the waiters' requests")
        time.sleep(1.0)  # every request reached its wait
        drain_started = time.time()
        with bench.workers(system, 1, ledger=None):
            client.join(timeout=config.wait_s + 30)
        if client.error is not None:
            raise client.error
    finally:
        stop.set()
        if sampler.is_alive():
            sampler.join(timeout=5)
        api.stop()
    answers = client.answers
    finished = [a for a in answers if a["finished_at"] is not None]
    if len(finished) < jobs:
        raise RuntimeError(f"W7: {len(finished)} of {jobs} waits answered with a finished job")
    latencies = [(a["received"] - a["finished_at"]) * 1000 for a in finished]
    waiting_only = [n for t, n in connections if t < drain_started]
    return {
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies),
        "connections_waiting_max": float(max(waiting_only, default=0)),
        "connections_max": float(max((n for _, n in connections), default=0)),
    }


def _ids(system: System) -> list[str]:
    if system.sqlite:
        with sqlite3.connect(system.url.removeprefix("sqlite:///"), timeout=30) as conn:
            return [str(row[0]) for row in conn.execute("SELECT id FROM vesper_jobs")]
    import psycopg  # noqa: PLC0415

    with psycopg.connect(system.url, autocommit=True) as conn:
        return [str(row[0]) for row in conn.execute("SELECT id FROM vesper_jobs")]


def _sample_connections(
    system: System, out: list[tuple[float, int]], stop: threading.Event
) -> None:
    """pg_stat_activity's sessions of the scratch database, the sampler's own left out."""
    if system.sqlite:
        return
    import psycopg  # noqa: PLC0415

    with psycopg.connect(system.url, autocommit=True) as conn:
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
            out.append((time.time(), int(row[0]) if row else 0))
            stop.wait(POLL_S)


class _Waiters(threading.Thread):
    """The client: one asyncio loop, one connection per job, `GET /jobs/{id}?wait=`; the
    wall clock when each answer's last byte arrived (parsed afterwards)."""

    def __init__(self, port: int, ids: list[str], wait_s: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.ids = ids
        self.wait_s = wait_s
        self.sent = threading.Event()
        self.answers: list[dict[str, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.answers = asyncio.run(self._all())
        except BaseException as exc:  # reported by the harness
            self.error = exc
            self.sent.set()

    async def _all(self) -> list[dict[str, Any]]:
        opened = [await asyncio.open_connection("127.0.0.1", self.port) for _ in self.ids]
        tasks = [
            asyncio.create_task(self._one(reader, writer, job_id))
            for (reader, writer), job_id in zip(opened, self.ids, strict=True)
        ]
        await asyncio.sleep(0.5)  # every request written
        self.sent.set()
        raw = await asyncio.wait_for(asyncio.gather(*tasks), self.wait_s + 30)
        return [_parsed(body, received) for body, received in raw]

    async def _one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, job_id: str
    ) -> tuple[bytes, float]:
        writer.write(
            f"GET /jobs/{job_id}?wait={self.wait_s:g}s HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{self.port}\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await reader.readexactly(length)
        received = time.time()
        writer.close()
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"W7: {head.splitlines()[0]!r} for job {job_id}")
        return body, received


def _parsed(body: bytes, received: float) -> dict[str, Any]:
    job = json.loads(body)
    finished = job.get("finished_at")
    return {
        "received": received,
        "status": job.get("status"),
        "finished_at": datetime.fromisoformat(finished).timestamp() if finished else None,
    }
