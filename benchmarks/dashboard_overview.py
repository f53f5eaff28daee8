"""The dashboard's overview with 1,000,000 jobs in the table, on PostgreSQL.

    .venv/bin/python -m benchmarks.dashboard_overview [--rows 1000000] [--hours 24] [--requests 30]
        [--queues 1]

Makes a scratch database, migrates it, bulk-loads `rows` jobs with one INSERT ... SELECT
over generate_series (80 % done, 10 % pending, 5 % failed, 3 % dlq, 2 % cancelled;
finished over the last `hours` hours; in `queues` queues, "default" alone by default),
ANALYZEs, starts `vesper api` on it and times GET /ui (the whole page: counts by status
up to the overview's cap, the oldest due job, the active jobs of each queue up to the
cap, the fleet and the per-minute activity of the last hour). Prints the query plans of
the overview's statements, so that the index use can be checked, and the latencies.
Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.dialects import postgresql

from tests.integration.service import Service
from vesper.adapters.sql.postgres import now_expression
from vesper.adapters.sqlcore.common import (
    active_by_queue_query,
    capped_counts_query,
    oldest_due_query,
)
from vesper.application.management import SUMMARY_CAP
from vesper.entrypoints.app import App
from vesper.testing.postgres import admin_url, scratch_database

LOAD = """
INSERT INTO vesper_jobs (id, type, priority, payload, status, retries, attempts,
    max_retries, error, run_at, fingerprint, created_at, updated_at, started_at, finished_at,
    queue)
SELECT gen_random_uuid(), 'type' || (g %% 20), g %% 11, '{"n": 1}'::json, s.status,
    0, 1, 3, CASE WHEN s.status IN ('failed', 'dlq') THEN 'boom' ELSE '' END,
    now() - (g %% %(span)s) * interval '1 second', '',
    now() - %(span)s * interval '1 second', now() - (g %% %(span)s) * interval '1 second',
    NULL,
    CASE WHEN s.status IN ('done', 'dlq', 'cancelled')
         THEN now() - (g %% %(span)s) * interval '1 second' END,
    CASE WHEN %(queues)s = 1 THEN 'default' ELSE 'q' || (g / 100 %% %(queues)s) END
FROM generate_series(1, %(rows)s) AS g,
LATERAL (SELECT CASE WHEN g %% 100 < 80 THEN 'done' WHEN g %% 100 < 90 THEN 'pending'
                     WHEN g %% 100 < 95 THEN 'failed' WHEN g %% 100 < 98 THEN 'dlq'
                     ELSE 'cancelled' END AS status) AS s
"""


def overview_queries() -> list[str]:
    """The overview's statements as the PostgreSQL store runs them (parameters inlined):
    the capped counts by status, the oldest due job, the active jobs by queue, and the
    activity query's first range. The exact count by (status, priority) is GET /stats's,
    and the count by (queue, status) GET /queues', no longer the overview's."""

    def inline(statement: Any, **params: Any) -> str:
        compiled = statement.params(**params).compile(
            dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
        )
        return str(compiled)

    return [
        inline(capped_counts_query(), limit=SUMMARY_CAP + 1),
        inline(oldest_due_query(now_expression()), now=None),
        inline(active_by_queue_query(postgres=True), limit=SUMMARY_CAP + 1),
        "SELECT count(*) FROM vesper_jobs "
        "WHERE finished_at >= now() - interval '1 hour' AND status IN ('done', 'dlq')",
    ]


# --status-index: the experiment of an index on (status, priority) for the counts
STATUS_INDEX = "CREATE INDEX bench_status_priority ON vesper_jobs (status, priority)"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--queues", type=int, default=1, help="jobs spread over q0, q1, ...")
    parser.add_argument("--status-index", action="store_true", help=STATUS_INDEX)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, scratch_database(admin_url()) as url:
        App({"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": url}).container.store()
        plain = url.replace("postgresql+psycopg://", "postgresql://")
        started = time.perf_counter()
        with psycopg.connect(plain, autocommit=True) as conn:
            span = int(args.hours * 3600)
            conn.execute(LOAD, {"rows": args.rows, "span": span, "queues": args.queues})
            if args.status_index:
                conn.execute(STATUS_INDEX)
            # as autovacuum leaves a table: statistics and the visibility map
            conn.execute("VACUUM ANALYZE vesper_jobs")
            loaded = time.perf_counter() - started
            print(f"loaded {args.rows} rows in {loaded:.1f} s")
            for query in overview_queries():
                print(query.strip())
                for (line,) in conn.execute("EXPLAIN (ANALYZE, COSTS OFF) " + query).fetchall():
                    print("   ", line)
        env = {"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": url}
        service = Service(env, Path(tmp) / "api.log", command=("api",))
        try:
            service.wait_ready()
            assert service.get("/ui").status_code == 200  # warm: pools, plans, templates
            times = []
            for _ in range(args.requests):
                t0 = time.perf_counter()
                response = service.get("/ui")
                times.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200
                assert "Finished per minute" in response.text
                if args.rows > SUMMARY_CAP * 10:  # 80 % done: past the cap
                    assert f'"done" title="more than {SUMMARY_CAP}' in response.text
                if args.rows > SUMMARY_CAP * 7 and args.queues == 1:
                    # 15 % waiting, all in the one queue: past the cap
                    assert f'<td>default</td><td class="num" title="more than {SUMMARY_CAP}' in (
                        response.text
                    )
        finally:
            service.stop()
        print(
            f"GET /ui with {args.rows} jobs ({args.hours:g} h of finished work, "
            f"{args.queues} queue(s)): "
            f"median {statistics.median(times):.0f} ms, p95 {percentile(times, 0.95):.0f} ms, "
            f"max {max(times):.0f} ms over {args.requests} requests"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
