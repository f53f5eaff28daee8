"""Pickup latency on PostgreSQL: enqueue -> consumer start, with an idle worker.

    .venv/bin/python benchmarks/pickup_latency.py [--jobs 500] [--rate 100] [--poll 1s]

Starts one `vesper worker` process (the ledger app of the integration tests) on a
scratch database, then enqueues jobs from this process at about `rate` per second, one
transaction each. The consumer writes its start time to a ledger; latency is that minus
the time the enqueue call returned. p99 well under the poll interval means the worker
woke on NOTIFY, not on its poll. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.integration.harness import WorkerProcess, read_ledger, starts, wait_until
from vesper.entrypoints.app import App
from vesper.testing.postgres import admin_url, scratch_database


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--poll", default="1s", help="the worker's VESPER_POLL_INTERVAL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, scratch_database(admin_url()) as url:
        ledger = Path(tmp) / "ledger"
        env = {
            "VESPER_STORAGE": "postgres",
            "VESPER_DATABASE_URL": url,
            "VESPER_POLL_INTERVAL": args.poll,
            "WORKERS": "10",
            "VESPER_TEST_LEDGER": str(ledger),
        }
        producer = App(env)
        producer.container.store()  # migrate before the worker starts
        worker = WorkerProcess(env, Path(tmp) / "worker.log")
        try:
            wait_until(
                lambda: producer.container.get_fleet()().processes, timeout=30, what="the worker"
            )
            time.sleep(1.0)  # let it go idle
            enqueued: dict[str, float] = {}
            interval = 1.0 / args.rate
            next_at = time.monotonic()
            for _ in range(args.jobs):
                next_at += interval
                job = producer.enqueue("record")
                enqueued[str(job.id)] = time.time()
                time.sleep(max(0.0, next_at - time.monotonic()))
            wait_until(
                lambda: len(starts(read_ledger(ledger))) >= args.jobs,
                timeout=60,
                what="every job to start",
            )
        finally:
            worker.stop()
            producer.close()
        latencies = [
            (entry["t"] - enqueued[entry["job_id"]]) * 1000
            for entry in starts(read_ledger(ledger))
            if entry["job_id"] in enqueued
        ]
    print(f"pickup latency over {len(latencies)} jobs at ~{args.rate:.0f}/s, poll {args.poll}:")
    print(
        f"  p50 {statistics.median(latencies):.1f} ms  p95 {percentile(latencies, 0.95):.1f} ms"
        f"  p99 {percentile(latencies, 0.99):.1f} ms  max {max(latencies):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
