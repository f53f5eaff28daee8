"""Claim + complete throughput per store: 10,000 jobs, one claimer, batches of 1 and 50.

    .venv/bin/python -m benchmarks.claim_throughput [--jobs 10000] [--stores memory,sqlite,postgres]

PostgreSQL: a scratch database is created on VESPER_TEST_DATABASE_URL (default: the local
server) and dropped afterwards. Not a test: it prints figures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vesper.application.execution import lease_of
from vesper.application.policies import Policies
from vesper.application.ports import Store
from vesper.application.submit import SubmitJobs
from vesper.domain.submission import JobRequest
from vesper.entrypoints.container import build_container
from vesper.testing.postgres import admin_url, scratch_database

SUBMIT_CHUNK = 1000


@contextmanager
def open_store(kind: str) -> Iterator[Store]:
    if kind == "memory":
        env = {"VESPER_STORAGE": "memory"}
        with _built(env) as store:
            yield store
    elif kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            with _built({"VESPER_STORAGE": "sqlite", "VESPER_DATABASE_URL": url}) as store:
                yield store
    elif kind == "postgres":
        with (
            scratch_database(admin_url()) as url,
            _built({"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": url}) as store,
        ):
            yield store
    else:
        raise SystemExit(f"unknown store {kind!r}")


@contextmanager
def _built(env: dict[str, str]) -> Iterator[Store]:
    container = build_container(env)
    try:
        yield container.store()
    finally:
        container.shutdown_resources()


def fill(store: Store, jobs: int) -> None:
    submit = SubmitJobs(store.jobs, Policies())
    for start in range(0, jobs, SUBMIT_CHUNK):
        count = min(SUBMIT_CHUNK, jobs - start)
        submit([JobRequest(type="bench", priority=i % 11) for i in range(count)])


def drain(store: Store, batch: int, settings: Policies) -> int:
    done = 0
    while True:
        claimed = store.jobs.claim(worker_id="bench", limit=batch, lease=settings.lease)
        if not claimed:
            return done
        done += len(store.jobs.complete([lease_of(job) for job in claimed]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--stores", default="memory,sqlite,postgres")
    parser.add_argument("--batches", default="1,50")
    args = parser.parse_args()
    settings = Policies()
    print(f"{'store':<10} {'batch':>5} {'jobs':>7} {'seconds':>8} {'jobs/s':>9}")
    for kind in args.stores.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            with open_store(kind) as store:
                fill(store, args.jobs)
                started = time.perf_counter()
                done = drain(store, batch, settings)
                elapsed = time.perf_counter() - started
            if done != args.jobs:
                print(f"{kind}: drained {done} of {args.jobs} jobs", file=sys.stderr)
                return 1
            print(f"{kind:<10} {batch:>5} {done:>7} {elapsed:>8.2f} {done / elapsed:>9,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
