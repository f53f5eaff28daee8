"""R1 (a burst of submissions), R2 (concurrent duplicate Idempotency-Keys across two API
processes), R7 (SQLite: one API and three workers on one file, kill -9 mid-run)."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from typing import Any

import httpx

from tests.faults.checker import Options
from tests.faults.lab import Lab, RowResult, kill, wait_for
from tests.faults.producer import _log, burst
from tests.faults.rows.common import scaled, timed, wait_drained


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@timed
def r1(lab: Lab) -> RowResult:
    """A burst of submissions with distinct keys, retried on 429/503 with the same key:
    exactly one row per key, every job done once, only 201/429/503 on the way."""
    result = RowResult("R1")
    cluster = lab.need_cluster()
    database = lab.pg_database()
    env = lab.env(cluster.env(database), WORKERS="4")
    api = lab.service(env, ("api",))
    workers = [lab.worker(env) for _ in range(3)]
    total, in_flight = scaled(lab, (2000, 64), (10000, 256))
    connections: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rows = cluster.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name LIKE 'vesper%%'",
                (database,),
            )
            connections.append(int(rows[0][0]))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    rng = random.Random(1)
    priorities = [rng.randint(0, 10) for _ in range(total)]
    burst(
        api.url,
        lab.responses,
        total=total,
        in_flight=in_flight,
        body=lambda i: {"type": "record", "priority": priorities[i]},
    )
    elapsed = time.monotonic() - started
    wait_drained(lab, result, database, total, timeout=scaled(lab, 90, 600))
    stop.set()
    sampler.join(5)
    rows = lab.dump_pg(database)
    report = lab.check(rows)
    result.expect_clean(report)
    statuses = Counter(r["status"] for r in lab.responses)
    final: dict[str, int] = {}
    for r in lab.responses:
        final[r["key"]] = r["status"]
    latencies = [r["latency"] for r in lab.responses if r["status"] == 201]
    result.figures.update(
        requests=total,
        rows=len(rows),
        statuses=dict(statuses),
        per_s=round(total / elapsed, 1),
        p50_ms=round(_percentile(latencies, 0.5) * 1000, 1),
        p99_ms=round(_percentile(latencies, 0.99) * 1000, 1),
        max_connections=max(connections, default=0),
    )
    result.expect(len(rows) == total, f"{len(rows)} rows for {total} keys")
    result.expect(set(statuses) <= {201, 429, 503, 200}, f"unexpected statuses {statuses}")
    result.expect(all(200 <= s < 300 for s in final.values()), "a key never got a 2xx")
    result.expect(not [r for r in lab.responses if r["error"]], "client timeouts or resets")
    # (pool 10 + overflow 5 + heartbeat 1 + 2) per process + one LISTEN per worker process
    limit = 4 * (15 + 3) + 3
    result.expect(max(connections, default=0) <= limit, f"{max(connections)} connections > {limit}")
    _ = workers
    return result


@timed
def r2(lab: Lab) -> RowResult:
    """Concurrent duplicates of one key across two API processes: one row per key, one
    201, the others 200 with the same job; another body is 422; bad keys are 400."""
    result = RowResult("R2")
    cluster = lab.need_cluster()
    database = lab.pg_database()
    env = lab.env(cluster.env(database))
    apis = [lab.service(env, ("api",)) for _ in range(2)]
    keys, copies = scaled(lab, (20, 20), (100, 50))
    responses: list[dict[str, Any]] = lab.responses

    async def post_all(requests: list[tuple[str, str, dict[str, Any]]]) -> None:
        async with httpx.AsyncClient(
            timeout=30, limits=httpx.Limits(max_connections=400)
        ) as client:

            async def one(url: str, key: str, body: dict[str, Any]) -> None:
                started = time.monotonic()
                try:
                    response = await client.post(
                        f"{url}/jobs", json=body, headers={"Idempotency-Key": key}
                    )
                except httpx.HTTPError as exc:
                    _log(responses, key, None, started, type(exc).__name__)
                    return
                _log(responses, key, response, started)

            await asyncio.gather(*(one(u, k, b) for u, k, b in requests))

    # every copy of a key in flight together, a few keys at a time (httpx's pool slows
    # down badly with thousands of queued requests on one client)
    group = max(1, 200 // copies)
    for first_key in range(0, keys, group):
        plan = [
            (apis[i % 2].url, f"dup-{k}", {"type": "record", "payload": {"k": k}})
            for k in range(first_key, min(keys, first_key + group))
            for i in range(copies)
        ]
        asyncio.run(post_all(plan))
    first = list(responses)
    rows = lab.dump_pg(database)
    report = lab.check(rows, Options(require_terminal=False))
    result.expect_clean(report)
    result.expect(len(rows) == keys, f"{len(rows)} rows for {keys} keys")
    by_key: dict[str, Counter[int]] = {}
    for r in first:
        by_key.setdefault(r["key"], Counter())[r["status"]] += 1
    result.expect(
        all(c[201] == 1 and c[200] == copies - 1 for c in by_key.values()),
        f"per-key statuses {Counter(tuple(sorted(c.items())) for c in by_key.values())}",
    )
    result.expect(
        # the driver's words for the violation (a job's JSON has a `unique_key` field)
        not any(
            "duplicate key" in r["body"]
            or "unique constraint" in r["body"].lower()
            or "uniqueviolation" in r["body"].lower()
            for r in first
        ),
        "unique-violation text in a body",
    )
    # the same keys with another body
    responses.clear()
    other = [
        (apis[i % 2].url, f"dup-{k}", {"type": "record", "payload": {"k": -1}})
        for k in range(5)
        for i in range(copies)
    ]
    asyncio.run(post_all(other))
    result.expect(
        all(r["status"] == 422 for r in responses),
        f"another body: {Counter(r['status'] for r in responses)}",
    )
    result.expect(len(lab.dump_pg(database)) == keys, "another body made a row")
    # bad keys
    for key in ("x" * 1000, ""):
        response = httpx.post(
            f"{apis[0].url}/jobs", json={"type": "record"}, headers={"Idempotency-Key": key}
        )
        result.expect(
            response.status_code == 400 and "Idempotency-Key" in response.text,
            f"key of {len(key)} chars: {response.status_code} {response.text[:200]}",
        )
    result.figures.update(keys=keys, copies=copies, rows=len(rows))
    responses.clear()
    responses.extend(first)
    return result


@timed
def r7(lab: Lab) -> RowResult:
    """SQLite, one API and three worker processes on one file, a worker killed mid-run:
    0 lost, 0 'database is locked' reaching a client or a job, integrity ok, WAL."""
    result = RowResult("R7")
    store = lab.sqlite_env("r7")
    path = lab.root / "r7.db"
    env = lab.env(store, WORKERS="2")
    api = lab.service(env, ("api",))
    workers = [lab.worker(env) for _ in range(3)]
    total = scaled(lab, 400, 2000)
    victim = workers[0]
    killer_done = threading.Event()
    in_flight: set[str] = set()

    def killer() -> None:
        if wait_for(lambda: lab.open_starts(victim.pid), timeout=60, interval=0.02):
            kill(victim)
            lab.fault("kill", victim.pid)
            victim.wait(10)
            # started there: in flight, or ended but not yet recorded
            in_flight.update(
                e["job_id"]
                for e in lab.ledger()
                if e["pid"] == victim.pid and e["event"] == "start"
            )
        killer_done.set()

    threading.Thread(target=killer, daemon=True).start()
    burst(
        api.url,
        lab.responses,
        total=total,
        in_flight=64,
        body=lambda i: {"type": "record", "payload": {"sleep": 0.02}},
    )
    killer_done.wait(60)

    def done() -> bool:
        with sqlite3.connect(path, timeout=30) as conn:
            n = conn.execute(
                "SELECT count(*) FROM vesper_jobs WHERE status IN ('done','dlq','cancelled')"
            ).fetchone()[0]
        return n >= total

    if wait_for(done, timeout=scaled(lab, 120, 600), interval=0.5) is None:
        result.failures.append("not drained")
    rows = lab.dump_sqlite(path)
    report = lab.check(rows)
    result.expect_clean(report)
    reruns = {
        j
        for j, n in Counter(e["job_id"] for e in lab.ledger() if e["event"] == "start").items()
        if n > 1
    }
    result.expect(
        reruns <= in_flight, f"re-runs outside the killed worker's jobs: {len(reruns - in_flight)}"
    )
    locked = [r for r in lab.responses if "locked" in r["body"]] + [
        r for r in rows if "locked" in (r["error"] or "")
    ]
    result.expect(not locked, f"{len(locked)} 'database is locked' reached a client or a job")
    result.expect(
        not [r for r in lab.responses if r["status"] >= 500 and r["status"] != 503], "5xx"
    )
    with sqlite3.connect(path, timeout=30) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    result.expect(integrity == "ok", f"integrity_check: {integrity}")
    result.expect(journal == "wal", f"journal_mode: {journal}")
    result.figures.update(
        jobs=total,
        rows=len(rows),
        victim_started=len(in_flight),
        reruns=len(reruns),
        statuses=dict(Counter(r["status"] for r in lab.responses)),
    )
    for w in workers[1:]:
        kill(w, signal.SIGTERM)
    return result
