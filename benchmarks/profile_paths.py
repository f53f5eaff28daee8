"""In-process loops over the hot paths, to run under py-spy (see docs/benchmarks.md).

    .venv/bin/py-spy record -o /tmp/w2.svg -- .venv/bin/python -m benchmarks.profile_paths \\
        --store postgres --path batch

Paths: single (W1: one submit per call), batch (W2: submits of 1,000), drain (claim 10 /
complete 10 in a loop, W3's store traffic without the runner). Prints jobs/s.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.claim_throughput import open_store
from vesper.application.execution import lease_of
from vesper.application.policies import Policies
from vesper.application.submit import SubmitJob, SubmitJobs
from vesper.domain.submission import JobRequest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default="postgres")
    parser.add_argument("--path", choices=("single", "batch", "drain"), default="batch")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--limit", type=int, default=10)
    args = parser.parse_args()
    settings = Policies()
    with open_store(args.store) as store:
        one, many = SubmitJob(store.jobs, settings), SubmitJobs(store.jobs, settings)
        started = time.perf_counter()
        if args.path == "single":
            for n in range(args.jobs):
                one(JobRequest(type="bench", payload={"n": n}))
        else:
            for start in range(0, args.jobs, 1000):
                many(
                    [JobRequest(type="bench", payload={"n": n}) for n in range(start, start + 1000)]
                )
        if args.path == "drain":
            started = time.perf_counter()
            while claimed := store.jobs.claim(
                worker_id="w", limit=args.limit, lease=settings.lease
            ):
                store.jobs.complete([lease_of(job) for job in claimed])
        elapsed = time.perf_counter() - started
    print(f"{args.store} {args.path}: {args.jobs / elapsed:,.0f} jobs/s")


if __name__ == "__main__":
    main()
