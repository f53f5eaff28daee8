"""The measurements behind docs/scaling.md, on a scratch PostgreSQL database each.

    .venv/bin/python -m benchmarks.scaling [--claimers 1,2,8,16] [--seconds 10]
        [--partitions 5] [--rows-per-partition 100000] [--wal-jobs 10000]

1. contention: N processes, each claiming batches of `--batch` jobs through the store
   (`store.jobs.claim`, the call `vesper worker` makes) and completing them, for
   `--seconds`, over a backlog large enough that none runs dry: claim+complete per
   second in all, and each claim's latency (p50/p99 over every process).
2. wal: one job's WAL bytes in each phase of its life (submitted in batches of 1,000,
   claimed and completed in batches of 10, pruned by the retention's DELETE), from
   pg_current_wal_lsn() before and after each phase (nothing else writes the scratch
   database; other databases on the server may, so the figures are upper bounds).
3. partitions: the same done rows in a plain table and in a table partitioned by
   created_at (one partition per day, the shape a retention that drops partitions
   needs): the claim's latency over the pending rows of today with the done rows beside
   them, and the cost of removing one day of done rows (DELETE of its rows against
   DROP of its partition): seconds and WAL bytes.

Not a test: it prints figures (and --json writes them), it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from vesper.testing.postgres import admin_url, scratch_database

# the claim vesper's PostgreSQL store runs (postgres_statements.CLAIM), on any table
CLAIM_SQL = """
WITH picked AS MATERIALIZED (
    SELECT id FROM {table}
    WHERE status IN ('pending', 'failed') AND run_at <= statement_timestamp()
    ORDER BY priority DESC, run_at, seq
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {table} AS j
SET status = 'processing', attempts = j.attempts + 1, worker_id = %(worker)s,
    lease_token = %(token)s, lease_expires_at = statement_timestamp() + interval '60 s',
    started_at = statement_timestamp(), updated_at = statement_timestamp()
FROM picked WHERE j.id = picked.id
RETURNING j.id
"""


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _app(url: str) -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from vesper.entrypoints.app import App  # noqa: PLC0415

    return App({"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": url})


def _fill(app: Any, jobs: int) -> None:
    from vesper.domain.submission import JobRequest  # noqa: PLC0415

    for start in range(0, jobs, 10_000):
        count = min(10_000, jobs - start)
        app.enqueue_many([JobRequest(type="bench", payload={"n": n}) for n in range(count)])


# -- 1. contention ------------------------------------------------------------------------


def _claimer(url: str, batch: int, seconds: float, ready: Any, out: Any) -> None:
    from vesper.application.execution import lease_of  # noqa: PLC0415
    from vesper.application.policies import Policies  # noqa: PLC0415

    app = _app(url)
    store = app.container.store()
    lease = Policies().lease
    worker = f"claimer-{uuid.uuid4().hex[:6]}"
    store.jobs.claim(worker_id=worker, limit=0, lease=lease)  # connect before the start
    latencies: list[float] = []
    done = 0
    ready.wait(timeout=300)  # every process connected: they start together
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        began = time.perf_counter()
        claimed = store.jobs.claim(worker_id=worker, limit=batch, lease=lease)
        latencies.append((time.perf_counter() - began) * 1000)
        if not claimed:
            break
        done += len(store.jobs.complete([lease_of(job) for job in claimed]))
    app.close()
    out.put((done, latencies))


def contention(url: str, claimers: int, batch: int, seconds: float) -> dict[str, float]:
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("TRUNCATE vesper_jobs")
    app = _app(url)
    # enough for the run at the best rate measured here (about 10,000/s), and spare
    _fill(app, int(12_000 * seconds))
    app.close()
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE vesper_jobs")
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    ready = context.Barrier(claimers)
    processes = [
        context.Process(target=_claimer, args=(url, batch, seconds, ready, out))
        for _ in range(claimers)
    ]
    for process in processes:
        process.start()
    results = [out.get(timeout=seconds + 300) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    done = sum(r[0] for r in results)
    latencies = sorted(ms for r in results for ms in r[1])
    return {
        "claimers": claimers,
        "jobs_per_s": done / seconds,
        "claim_p50_ms": _percentile(latencies, 0.5),
        "claim_p99_ms": _percentile(latencies, 0.99),
        "claims": len(latencies),
    }


# -- 2. WAL per job -----------------------------------------------------------------------


def _lsn(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def wal_per_job(url: str, jobs: int) -> dict[str, float]:
    from vesper.application.execution import lease_of  # noqa: PLC0415
    from vesper.application.policies import Policies  # noqa: PLC0415

    app = _app(url)
    store = app.container.store()
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("TRUNCATE vesper_jobs")
        conn.execute("CHECKPOINT")  # full-page images after it: the steady state's cost
        marks = [_lsn(conn)]
        from vesper.domain.submission import JobRequest  # noqa: PLC0415

        for _ in range(0, jobs, 1000):
            app.enqueue_many([JobRequest(type="bench", payload={"n": n}) for n in range(1000)])
        marks.append(_lsn(conn))
        lease = Policies().lease
        while claimed := store.jobs.claim(worker_id="wal", limit=10, lease=lease):
            store.jobs.complete([lease_of(job) for job in claimed])
        marks.append(_lsn(conn))
        began = time.perf_counter()
        conn.execute("DELETE FROM vesper_jobs WHERE status = 'done'")
        delete_s = time.perf_counter() - began
        marks.append(_lsn(conn))
    app.close()
    return {
        "submit_bytes_per_job": (marks[1] - marks[0]) / jobs,
        "claim_complete_bytes_per_job": (marks[2] - marks[1]) / jobs,
        "delete_bytes_per_job": (marks[3] - marks[2]) / jobs,
        "delete_us_per_job": delete_s / jobs * 1e6,
    }


# -- 3. partitions ------------------------------------------------------------------------

_COLUMNS = """
    id uuid NOT NULL, type text NOT NULL, priority integer NOT NULL,
    payload jsonb NOT NULL, status text NOT NULL, attempts integer NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL, seq bigint NOT NULL, worker_id text,
    lease_token uuid, lease_expires_at timestamptz, started_at timestamptz,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
    finished_at timestamptz
"""
# vesper's indexes (the claim's, the finished jobs', status/seq, type/seq); a partitioned
# table's primary key must hold its partition key
_INDEXES = [
    "CREATE INDEX ON {t} (priority DESC, run_at, seq) WHERE status IN ('pending', 'failed')",
    "CREATE INDEX ON {t} (status, finished_at) WHERE status IN ('done', 'dlq', 'cancelled')",
    "CREATE INDEX ON {t} (status, seq)",
    "CREATE INDEX ON {t} (type, seq)",
]
_SEED = """
INSERT INTO {t} (id, type, priority, payload, status, run_at, seq, created_at, updated_at,
                 finished_at)
SELECT gen_random_uuid(), 'bench', 0, jsonb_build_object('n', g), %(status)s,
       CASE WHEN %(status)s = 'done' THEN %(day)s::timestamptz ELSE '2000-01-01' END
           + g * interval '1 ms', %(first)s + g,
       %(day)s::timestamptz + g * interval '1 ms', %(day)s::timestamptz + g * interval '1 ms',
       CASE WHEN %(status)s = 'done' THEN %(day)s::timestamptz + g * interval '1 ms' END
FROM generate_series(1, %(rows)s) AS g
"""


def _setup_tables(conn: psycopg.Connection[Any], days: list[str], today: str) -> None:
    conn.execute(f"CREATE TABLE jobs_plain ({_COLUMNS}, PRIMARY KEY (id))")  # type: ignore[arg-type]
    conn.execute(
        f"CREATE TABLE jobs_part ({_COLUMNS}, PRIMARY KEY (id, created_at))"  # type: ignore[arg-type]
        " PARTITION BY RANGE (created_at)"
    )
    for day in [*days, today]:
        name = "jobs_part_" + day.replace("-", "")
        conn.execute(
            f"CREATE TABLE {name} PARTITION OF jobs_part"  # type: ignore[arg-type]
            f" FOR VALUES FROM ('{day}') TO (('{day}'::date + 1)::timestamptz)"
        )
    for table in ("jobs_plain", "jobs_part"):
        for index in _INDEXES:
            conn.execute(index.format(t=table))  # type: ignore[arg-type]


def _claim_latencies(conn: psycopg.Connection[Any], table: str, claims: int) -> list[float]:
    sql = CLAIM_SQL.format(table=table)
    out: list[float] = []
    for _ in range(claims):
        began = time.perf_counter()
        rows = conn.execute(sql, {"limit": 10, "worker": "w", "token": uuid.uuid4()}).fetchall()  # type: ignore[arg-type]
        out.append((time.perf_counter() - began) * 1000)
        if not rows:
            break
        conn.execute(
            f"UPDATE {table} SET status = 'done', finished_at = now(), lease_token = NULL,"  # type: ignore[arg-type]
            " worker_id = NULL, lease_expires_at = NULL WHERE id = ANY(%s)",
            ([r[0] for r in rows],),
        )
    return sorted(out[5:])  # the first claims plan and warm the cache


def partitions(url: str, days: int, rows: int, claims: int) -> dict[str, float]:
    day_names = [f"2030-01-{d + 1:02d}" for d in range(days)]
    today = f"2030-01-{days + 1:02d}"
    out: dict[str, float] = {}
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        _setup_tables(conn, day_names, today)
        for table in ("jobs_plain", "jobs_part"):
            for index, day in enumerate(day_names):
                conn.execute(
                    _SEED.format(t=table),  # type: ignore[arg-type]
                    {"status": "done", "day": day, "first": index * rows, "rows": rows},
                )
            conn.execute(
                _SEED.format(t=table),  # type: ignore[arg-type]
                {"status": "pending", "day": today, "first": days * rows, "rows": claims * 10},
            )
            conn.execute(f"VACUUM ANALYZE {table}")  # type: ignore[arg-type]
        for table in ("jobs_plain", "jobs_part"):
            latencies = _claim_latencies(conn, table, claims)
            out[f"{table}_claim_p50_ms"] = _percentile(latencies, 0.5)
            out[f"{table}_claim_p99_ms"] = _percentile(latencies, 0.99)
        conn.execute("CHECKPOINT")
        oldest = day_names[0]
        began, lsn = time.perf_counter(), _lsn(conn)
        conn.execute(
            "DELETE FROM jobs_plain WHERE status = 'done' AND finished_at < %s::date + 1",
            (oldest,),
        )
        out["plain_delete_s"] = time.perf_counter() - began
        out["plain_delete_wal_mb"] = (_lsn(conn) - lsn) / 2**20
        began = time.perf_counter()
        conn.execute("VACUUM jobs_plain")
        out["plain_vacuum_s"] = time.perf_counter() - began
        out["plain_vacuum_wal_mb"] = (_lsn(conn) - lsn) / 2**20 - out["plain_delete_wal_mb"]
        began, lsn = time.perf_counter(), _lsn(conn)
        conn.execute("DROP TABLE jobs_part_" + oldest.replace("-", ""))  # type: ignore[operator]
        out["partition_drop_s"] = time.perf_counter() - began
        out["partition_drop_wal_mb"] = (_lsn(conn) - lsn) / 2**20
        out["rows_removed"] = rows
        out["rows_total"] = days * rows
    return out


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claimers", default="1,2,8,16")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--wal-jobs", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=5)
    parser.add_argument("--rows-per-partition", type=int, default=100_000)
    parser.add_argument("--claims", type=int, default=1000)
    parser.add_argument("--parts", default="contention,wal,partitions")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    results: dict[str, Any] = {}
    with scratch_database(admin_url(), prefix="vesper_scaling_") as url:
        app = _app(url)
        app.container.store()  # migrate
        app.close()
        if "contention" in parts:
            results["contention"] = []
            for n in (int(c) for c in args.claimers.split(",")):
                row = contention(url, n, args.batch, args.seconds)
                results["contention"].append(row)
                print(
                    f"contention: {n:>2} claimers, batch {args.batch}: "
                    f"{row['jobs_per_s']:>8,.0f} jobs/s, claim p50 {row['claim_p50_ms']:.1f} ms,"
                    f" p99 {row['claim_p99_ms']:.1f} ms",
                    flush=True,
                )
        if "wal" in parts:
            results["wal"] = wal_per_job(url, args.wal_jobs)
            print("wal:", {k: round(v, 1) for k, v in results["wal"].items()}, flush=True)
        if "partitions" in parts:
            results["partitions"] = partitions(
                url, args.partitions, args.rows_per_partition, args.claims
            )
            print(
                "partitions:",
                {k: round(v, 3) for k, v in results["partitions"].items()},
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
