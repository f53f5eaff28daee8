"""Bulk retry on PostgreSQL: 100,000 dlq jobs back to pending, watched for long
statements and transactions.

    .venv/bin/python benchmarks/bulk_retry.py [--jobs 100000] [--batch 1000] [--unique-keys]

Fills a scratch database with `jobs` dlq rows, runs the bulk retry use case (what
`POST /jobs/retry` and `vesper jobs retry` call), and meanwhile samples pg_stat_activity
every 20 ms, as the fault checker's long-transaction probe does (tests/faults/lab.py,
`Lab.activity`): the oldest running statement and the oldest open transaction of
vesper's sessions. Exits 1 if either reached 1 s. Not a test: it prints figures.
`--unique-keys` gives every job a unique key of its own: each batch then also looks up
the active holders of its keys (none hold them: every job is retried).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import psycopg

from vesper.application.management import BulkJobs
from vesper.domain.bulk import BulkAction, BulkFilter
from vesper.domain.states import Status
from vesper.entrypoints.app import App
from vesper.testing.postgres import admin_url, scratch_database

FILL = """
INSERT INTO vesper_jobs (id, type, priority, payload, status, retries, attempts,
    max_retries, error, run_at, fingerprint, created_at, updated_at, finished_at, unique_key)
SELECT gen_random_uuid(), 'bulk', 0, '{}', 'dlq', 0, 1, 0, 'boom', now(), '', now(), now(),
    now(), CASE WHEN %s THEN 'key-' || n END
FROM generate_series(1, %s) AS n
"""
PROBE = """
SELECT COALESCE(MAX(EXTRACT(EPOCH FROM now() - query_start)) FILTER (WHERE state = 'active'), 0),
       COALESCE(MAX(EXTRACT(EPOCH FROM now() - xact_start))
           FILTER (WHERE state <> 'idle'), 0)
FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'vesper' AND pid <> pg_backend_pid()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--unique-keys", action="store_true")
    args = parser.parse_args()
    with scratch_database(admin_url()) as url:
        app = App({"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": url})
        jobs = app.container.job_repository()
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(FILL, (args.unique_keys, args.jobs))
            conn.execute("ANALYZE vesper_jobs")
        worst = [0.0, 0.0]
        samples = 0
        done = threading.Event()

        def probe() -> None:
            nonlocal samples
            with psycopg.connect(dsn, autocommit=True) as conn:
                while not done.is_set():
                    row = conn.execute(PROBE).fetchone()
                    assert row is not None
                    worst[0] = max(worst[0], float(row[0]))
                    worst[1] = max(worst[1], float(row[1]))
                    samples += 1
                    time.sleep(0.02)

        watcher = threading.Thread(target=probe)
        watcher.start()
        started = time.perf_counter()
        try:
            outcome = BulkJobs(jobs, batch=args.batch)(
                BulkAction.RETRY, BulkFilter(status=Status.DLQ)
            )
        finally:
            done.set()
            watcher.join()
        seconds = time.perf_counter() - started
        pending = app.container.get_stats()().counts
        app.close()
    left = sum(n for (status, _), n in pending.items() if status is Status.DLQ)
    count = outcome.changed
    keys = " with unique keys" if args.unique_keys else ""
    print(
        f"bulk retry: {count} jobs{keys} in {seconds:.2f}s ({count / seconds:,.0f}/s), batches "
        f"of {args.batch}; longest statement {worst[0]:.3f}s, longest transaction "
        f"{worst[1]:.3f}s ({samples} samples); skipped {outcome.skipped}; dlq left: {left}"
    )
    return 0 if count == args.jobs and left == 0 and max(worst) < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
