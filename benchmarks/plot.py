"""Plot a `vesper bench --json` result: drain throughput and pickup latency per system.

    benchmarks/.peers-venv/bin/python benchmarks/plot.py RESULT.json docs/benchmarks.png

matplotlib comes from the peers' venv (benchmarks/requirements-peers.txt), never vesper's.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(source: str, target: str) -> None:
    with open(source) as file:
        document = json.load(file)
    summary = document["summary"]
    systems = document["systems"]
    figure, (drain, pickup) = plt.subplots(1, 2, figsize=(12, 4.5))

    width = 0.38
    for offset, (workload, label) in enumerate((("W3", "1 process"), ("W3x2", "2 processes"))):
        cells = [summary.get(workload, {}).get(s, {}).get("jobs_per_s") for s in systems]
        xs = [i + (offset - 0.5) * width for i in range(len(systems))]
        medians = [c["median"] if c else 0 for c in cells]
        errors = [
            [c["median"] - c["min"] if c else 0 for c in cells],
            [c["max"] - c["median"] if c else 0 for c in cells],
        ]
        bars = drain.bar(xs, medians, width, yerr=errors, capsize=3, label=label)
        drain.bar_label(bars, labels=[f"{m:,.0f}" for m in medians], fontsize=8)
    drain.set_xticks(range(len(systems)), systems, rotation=20, ha="right")
    drain.set_ylabel("jobs/s (median, min-max)")
    slots = document.get("config", {}).get("concurrency", 10)
    title = f"W3 drain: 10,000 no-op jobs, {slots} slots per process"
    for system in systems:
        if system.startswith("vesper-slots"):
            title += f" ({system}: {system.removeprefix('vesper-slots')})"
    drain.set_title(title)
    drain.legend()

    width = 0.27
    for offset, metric in enumerate(("p50_ms", "p95_ms", "p99_ms")):
        cells = [summary.get("W4", {}).get(s, {}).get(metric) for s in systems]
        xs = [i + (offset - 1) * width for i in range(len(systems))]
        medians = [c["median"] if c else 0 for c in cells]
        bars = pickup.bar(xs, medians, width, label=metric.removesuffix("_ms"))
        pickup.bar_label(bars, labels=[f"{m:.1f}" for m in medians], fontsize=7)
    pickup.set_xticks(range(len(systems)), systems, rotation=20, ha="right")
    pickup.set_yscale("log")
    pickup.set_ylabel("ms, log scale (median of runs)")
    pickup.set_title("W4 pickup latency: 500 jobs at ~100/s, idle worker")
    pickup.legend()

    info = document["machine"]
    figure.suptitle(
        f"{info.get('nproc')} cores, {info.get('memory_gib')} GiB, "
        f"PostgreSQL {info.get('postgres_server_version', '-')}",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(target, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
