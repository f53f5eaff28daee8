"""W6 (scale): seeding vesper's PostgreSQL table with many rows fast, straight in SQL, and
checking that the store reads them back as valid jobs.

The rows are what the store itself writes for `JobRequest(type="bench", payload={"n": n})`
with the default max_retries (3): the same columns, the payload text as SQLAlchemy's JSON
type writes it, and the domain's own fingerprint (sha256 of the canonical request,
computed by PostgreSQL; `check_seeded` compares it with `vesper.domain.submission.fingerprint`).
Done rows look like jobs that ran an hour ago (one attempt, no lease); pending rows are
due now. One INSERT ... SELECT generate_series per call: ~1,000,000 rows in tens of
seconds on a small machine.
"""

from __future__ import annotations

import re
import time
from typing import Any

from benchmarks.drivers.common import JOB_TYPE

MAX_RETRIES = 3  # Policies' default, what `fill` and the API give a job without one

# the canonical text `fingerprint()` hashes, for payload {"n": g}
_CANONICAL = (
    """'{"delay":null,"max_retries":%d,"payload":{"n":' || g || '},"priority":0,"""
    """"run_at":null,"timeout":null,"type":"%s"}'"""
)

_COLUMNS = (
    "id, type, priority, payload, status, retries, attempts, max_retries, error, run_at,"
    " idempotency_key, fingerprint, timeout, trace_context, worker_id, lease_token,"
    " lease_expires_at, created_at, updated_at, started_at, finished_at"
)


def seed_sql(status: str, first: int, count: int) -> str:
    """An INSERT of `count` jobs of `status` ('done' or 'pending'), payload n = first, ..."""
    if status not in ("done", "pending"):
        raise ValueError(status)
    if not re.fullmatch(r"[a-z_]+", JOB_TYPE):
        raise ValueError(JOB_TYPE)
    canonical = _CANONICAL % (MAX_RETRIES, JOB_TYPE)
    done = status == "done"
    # done: created an hour ago, ran for a millisecond; pending: due a second ago
    created = "t - interval '1 hour'" if done else "t - interval '1 second'"
    started = "t - interval '1 hour' + interval '1 ms'" if done else "NULL"
    finished = "t - interval '1 hour' + interval '2 ms'" if done else "NULL"
    updated = finished if done else created
    return f"""
        INSERT INTO vesper_jobs ({_COLUMNS})
        SELECT gen_random_uuid(), '{JOB_TYPE}', 0, ('{{"n": ' || g || '}}')::json,
               '{status}', 0, {1 if done else 0}, {MAX_RETRIES}, '', {created},
               NULL, encode(sha256(convert_to({canonical}, 'UTF8')), 'hex'), NULL, NULL,
               NULL, NULL, NULL, {created}, {updated}, {started}, {finished}
        FROM generate_series({int(first)}, {int(first) + int(count) - 1}) AS g,
             (SELECT now() AS t) AS clock
    """


def seed(url: str, status: str, count: int, *, first: int = 0) -> float:
    """Insert `count` rows of `status` in one statement, then VACUUM ANALYZE; seconds taken.

    VACUUM ANALYZE: the state of a table that has lived a while (statistics, visibility
    map), which autovacuum would reach on its own (the bench does not wait for it; it may
    be off, as on the machine of docs/benchmarks.md).
    """
    import psycopg  # noqa: PLC0415

    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        if count > 0:
            conn.execute(seed_sql(status, first, count))  # type: ignore[arg-type]
        conn.execute("VACUUM (ANALYZE) vesper_jobs")
    return time.perf_counter() - started


def scalar(url: str, sql: str, params: tuple[Any, ...] = ()) -> int:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
        return int(row[0]) if row and row[0] is not None else 0


def execute(url: str, *statements: str) -> None:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)  # type: ignore[arg-type]


def check_seeded(url: str) -> None:
    """Read the first and the last seeded row through vesper's store: valid jobs, with the
    payload and the fingerprint the domain would have given them."""
    import psycopg  # noqa: PLC0415

    from vesper.domain.job import JobId  # noqa: PLC0415
    from vesper.domain.submission import JobRequest, fingerprint  # noqa: PLC0415
    from vesper.entrypoints.container import build_container  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "(SELECT id FROM vesper_jobs ORDER BY seq LIMIT 1)"
            " UNION ALL (SELECT id FROM vesper_jobs ORDER BY seq DESC LIMIT 1)"
        ).fetchall()
    container = build_container({"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": url})
    try:
        jobs = container.store().jobs
        for (job_id,) in rows:
            job = jobs.get(JobId(job_id))  # JobNotFound if it is not there
            expected = fingerprint(
                JobRequest(type=JOB_TYPE, payload=job.payload), max_retries=MAX_RETRIES
            )
            if job.type != JOB_TYPE or set(job.payload) != {"n"} or job.fingerprint != expected:
                raise RuntimeError(f"seeded job {job_id} is not what the store writes: {job!r}")
    finally:
        container.shutdown_resources()


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, KiB; (0, 0) once it is gone."""
    found = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in found:
                    found[key] = int(value.split()[0])
    except OSError:
        pass
    return found["VmRSS"], found["VmHWM"]
