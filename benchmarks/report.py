"""The bench's tables (rich) and its ratio table: vesper against the best peer."""

from __future__ import annotations

import os
import platform
from typing import Any

from rich.console import Console
from rich.table import Table

PEERS = ("procrastinate", "pgqueuer")
# workload -> (title, metric, higher is better)
SHOWN: dict[str, tuple[str, str, bool]] = {
    "W1": ("W1 enqueue-single (jobs/s)", "jobs_per_s", True),
    "W2": ("W2 enqueue-batch (jobs/s)", "jobs_per_s", True),
    "W3": ("W3 drain, 1 process (jobs/s)", "jobs_per_s", True),
    "W3x2": ("W3 drain, 2 processes (jobs/s)", "jobs_per_s", True),
    "W4": ("W4 pickup p50 (ms)", "p50_ms", False),
    "W4.p95": ("W4 pickup p95 (ms)", "p95_ms", False),
    "W4.p99": ("W4 pickup p99 (ms)", "p99_ms", False),
    "W5": ("W5 HTTP burst (submissions/s)", "jobs_per_s", True),
    "W5.p50": ("W5 HTTP latency p50 (ms)", "p50_ms", False),
    "W5.p99": ("W5 HTTP latency p99 (ms)", "p99_ms", False),
    "W5.errors": ("W5 HTTP errors", "errors", False),
}
# the targets: workload row -> (minimum ratio vesper/best peer, or None)
TARGETS = {"W1": 1.25, "W2": 1.0, "W3": 2.0, "W4.p99": 1.0}


def machine(pg_url: str | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
        info["memory_gib"] = round(kib / 1024 / 1024, 1)
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if pg_url:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(pg_url, autocommit=True) as conn:
            for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers"):
                row = conn.execute(f"SHOW {name}").fetchone()  # type: ignore[arg-type]
                info[f"postgres_{name}"] = row[0] if row else None
    return info


def _cell(summary: dict[str, Any], workload: str, system: str) -> dict[str, float] | None:
    key = workload.split(".", maxsplit=1)[0]
    metric = SHOWN[workload][1]
    found = summary.get(key, {}).get(system, {}).get(metric)
    return found if isinstance(found, dict) else None


def ratios(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """vesper (PostgreSQL) / best peer, by medians; for latencies, vesper / best (lowest)."""
    out: dict[str, dict[str, Any]] = {}
    for workload, (_, _, higher) in SHOWN.items():
        mine = _cell(summary, workload, "vesper")
        peers = {p: c for p in PEERS if (c := _cell(summary, workload, p)) is not None}
        if mine is None or not peers:
            continue
        pick = max if higher else min
        best = pick(peers, key=lambda p: peers[p]["median"])
        ratio = mine["median"] / peers[best]["median"] if peers[best]["median"] else None
        target = TARGETS.get(workload)
        met = None
        if target is not None and ratio is not None:
            met = ratio >= target if higher else ratio <= target
        out[workload] = {
            "vesper": mine["median"],
            "best_peer": best,
            "best_peer_value": peers[best]["median"],
            "ratio": ratio,
            "higher_is_better": higher,
            "target": target,
            "met": met,
        }
    return out


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def print_report(document: dict[str, Any], console: Console) -> None:
    summary = document["summary"]
    systems = document["systems"]
    info = document["machine"]
    console.print(
        f"machine: {info.get('nproc')} cores, {info.get('memory_gib')} GiB, "
        f"{info.get('cpu', '?')}; PostgreSQL {info.get('postgres_server_version', '-')} "
        f"(synchronous_commit={info.get('postgres_synchronous_commit', '-')}); "
        f"Python {info.get('python')}"
    )
    table = Table(title="median (min-max) of each system's runs")
    table.add_column("workload")
    for system in systems:
        table.add_column(system, justify="right")
    for workload, (title, _, _) in SHOWN.items():
        cells = [_cell(summary, workload, s) for s in systems]
        if not any(cells):
            continue
        table.add_row(
            title,
            *(
                f"{_fmt(c['median'])} ({_fmt(c['min'])}-{_fmt(c['max'])})" if c else "-"
                for c in cells
            ),
        )
    console.print(table)
    if document["ratios"]:
        ratio_table = Table(title="vesper (PostgreSQL) / best peer, medians")
        for column in ("workload", "vesper", "best peer", "ratio", "target", "met"):
            ratio_table.add_column(column, justify="right" if column != "workload" else "left")
        for workload, row in document["ratios"].items():
            target = row["target"]
            sign = ">=" if row["higher_is_better"] else "<="
            ratio_table.add_row(
                SHOWN[workload][0],
                _fmt(row["vesper"]),
                f"{row['best_peer']} {_fmt(row['best_peer_value'])}",
                f"{row['ratio']:.2f}" if row["ratio"] is not None else "-",
                f"{sign} {target}" if target is not None else "",
                {True: "yes", False: "NO", None: ""}[row["met"]],
            )
        console.print(ratio_table)
    for error in document["errors"]:
        console.print(f"[red]failed run:[/red] {error}")
