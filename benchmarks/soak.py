"""The randomized fault soak over the whole product (docs/reliability.md, "The soak").

    python -m benchmarks.soak --minutes 3 --seed 21
    python -m benchmarks.soak --minutes 60 --seed 2160 --json soak.json

Starts a disposable PostgreSQL cluster, 4 worker and 2 API processes on a scratch
database, the workload (HTTP and Python producers, batches, transactional submits,
failing consumers, results, waiters, cancels, dlq retries, retention at seconds) and a
nemesis on a schedule drawn from the seed (printed first: the same seed gives the same
schedule). Stops by itself after --minutes, drains, runs every checker, prints the
figures and exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path

from tests.faults.cluster import start_cluster
from tests.faults.lab import lab
from tests.faults.soak.run import soak
from tests.faults.soak.schedule import plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument(
        "--plan-only", action="store_true", help="print the fault schedule and exit"
    )
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    if args.plan_only:
        for planned in plan(args.seed, args.minutes):
            print(planned.line())
        return 0
    # SIGTERM ends the run like Ctrl+C: the processes and the cluster are cleaned up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cluster = start_cluster()
    root = Path(tempfile.mkdtemp(prefix="vesper-soak-"))
    try:
        with lab(root, cluster, scale="full") as the_lab:
            result = soak(the_lab, minutes=args.minutes, seed=args.seed)
    finally:
        cluster.destroy()
    per_fault = result.figures.pop("per_fault")
    checked = result.figures.pop("checked")
    print(result.line(), flush=True)
    print("per fault kind:")
    for kind, entry in sorted(per_fault.items()):
        print(
            f"  {kind:<13} "
            + " ".join(
                f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()
            )
        )
    print("invariants checked: " + " ".join(f"{k}={v}" for k, v in checked.items()))
    print(f"logs and ledger: {root}")
    if args.json:
        figures = {**result.figures, "per_fault": per_fault, "checked": checked}
        args.json.write_text(
            json.dumps({"failures": result.failures, **figures}, indent=1, default=str)
        )
    if result.failures:
        print(f"soak FAILED with seed {args.seed}: {'; '.join(result.failures)[:4000]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
