"""Cores used per kind of process, window by window, from /proc (Linux): what a drain
spends in vesper's workers, in PostgreSQL and elsewhere, and what it leaves idle.

    .venv/bin/python -m benchmarks.cpu_share --seconds 60 --interval 0.5 > cpu.txt &
    .venv/bin/python -m benchmarks --stores postgres --workloads W3x2 --repeats 3

Each line is a window: its index and the cores (CPU seconds per second) each kind used.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def kind(command: str) -> str:
    if "postgres" in command:
        return "postgres"
    if "cli worker" in command:
        return "vesper worker"
    if "python" in command:
        return "other python"
    return "other"


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """Each live process's kind and the CPU seconds it used so far."""
    found: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        found[int(entry.name)] = (kind(command), (int(fields[11]) + int(fields[12])) / TICKS)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    before, at = cpu_seconds(), time.monotonic()
    for window in range(int(args.seconds / args.interval)):
        time.sleep(args.interval)
        now, moment = cpu_seconds(), time.monotonic()
        used: dict[str, float] = {}
        for pid, (name, seconds) in now.items():
            used[name] = used.get(name, 0.0) + seconds - before.get(pid, (name, seconds))[1]
        shares = {name: round(s / (moment - at), 2) for name, s in used.items() if s > 0.01}
        print(window, dict(sorted(shares.items(), key=lambda item: -item[1])), flush=True)
        before, at = now, moment


if __name__ == "__main__":
    main()
