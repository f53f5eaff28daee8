"""The fault matrix of RELIABILITY.md, run through the same harness as tests/faults.

    python -m benchmarks.fault_matrix --rows R1,R3a,R5 [--scale full|ci]
    python -m benchmarks.fault_matrix --rows R17 --minutes 30

One line per row: PASS/FAIL, seconds, and its figures (lost, re-runs, recovery seconds
by database time, p99 where the row records it). Starts its own disposable PostgreSQL
cluster (initdb + pg_ctl as the postgres user) and removes it at the end. Exit 1 when
a row fails.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.faults.cluster import start_cluster
from tests.faults.lab import Lab, RowResult
from tests.faults.rows import crashes, lifecycle, outages, skew, soak, submissions

ROWS: dict[str, Callable[..., RowResult]] = {
    "R1": submissions.r1,
    "R2": submissions.r2,
    "R3a": crashes.r3a,
    "R3b": lambda lab: crashes.r3b(lab, variant="stop"),
    "R3b-proxy": lambda lab: crashes.r3b(lab, variant="proxy"),
    "R4-A": lambda lab: lifecycle.r4(lab, variant="A"),
    "R4-B": lambda lab: lifecycle.r4(lab, variant="B"),
    "R4-C": lambda lab: lifecycle.r4(lab, variant="C"),
    "R5": outages.r5,
    "R6": outages.r6,
    "R6-pw": outages.r6_password,
    "R7": submissions.r7,
    "R8": skew.r8,
    "R9": lifecycle.r9,
    "R9-P2": lifecycle.r9_p2,
    "R13": outages.r13,
    "R14": outages.r14,
    "R15": lifecycle.r15,
    "R16": lifecycle.r16,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", default=",".join(ROWS), help="comma-separated rows (R3b includes R3b-proxy)"
    )
    parser.add_argument("--scale", choices=["ci", "full"], default="full")
    parser.add_argument("--minutes", type=float, default=30.0, help="R17 soak duration")
    args = parser.parse_args(argv)
    wanted: list[str] = []
    for name in (n.strip() for n in args.rows.split(",") if n.strip()):
        expanded = [k for k in ROWS if k == name or k.startswith(f"{name}-")]
        if name == "R17":
            expanded = ["R17"]
        if not expanded:
            parser.error(f"unknown row {name!r}; known: {', '.join([*ROWS, 'R17'])}")
        wanted += [row for row in expanded if row not in wanted]
    # SIGTERM unwinds like Ctrl+C: the rows' processes and the cluster are cleaned up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cluster = start_cluster()
    failed = False
    try:
        for name in wanted:
            with tempfile.TemporaryDirectory(prefix=f"vesper-{name}-") as tmp:
                lab = Lab(Path(tmp), cluster, scale=args.scale)
                try:
                    if not cluster.running():
                        cluster.start()
                    if name == "R17":
                        result = soak.r17(lab, minutes=args.minutes)
                    else:
                        result = ROWS[name](lab)
                except Exception as exc:  # one row's crash must not hide the others
                    result = RowResult(name, failures=[f"crashed: {type(exc).__name__}: {exc}"])
                finally:
                    lab.close()
            failed |= bool(result.failures)
            print(result.line(), flush=True)
    finally:
        cluster.destroy()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
