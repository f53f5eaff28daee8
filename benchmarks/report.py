"""The bench's tables (rich): the figures, vesper against the best peer, and the absolute
targets (W5, W6, SQLite)."""

from __future__ import annotations

import os
import platform
from typing import Any

from rich.console import Console
from rich.table import Table

PEERS = ("procrastinate", "pgqueuer", "pgqueuer-batch25", "pgqueuer-psycopg")
# vesper's rows on PostgreSQL: its defaults, and the slots its README advises for many
# short jobs (as pgqueuer-batch25 is pgqueuer's advice); the ratio takes the best of each
SHORT_JOB_SLOTS = 50
VESPERS = ("vesper", f"vesper-slots{SHORT_JOB_SLOTS}")
# workload -> (title, metric, higher is better)
SHOWN: dict[str, tuple[str, str, bool]] = {
    "W1": ("W1 enqueue-single (jobs/s)", "jobs_per_s", True),
    "W1c": ("W1c enqueue, 16 producers (jobs/s)", "jobs_per_s", True),
    "W2": ("W2 enqueue-batch, one call (jobs/s)", "jobs_per_s", True),
    "W3": ("W3 drain, 1 process (jobs/s)", "jobs_per_s", True),
    "W3x2": ("W3 drain, 2 processes (jobs/s)", "jobs_per_s", True),
    "W3q": ("W3 drain, queue by name, no limit (jobs/s)", "jobs_per_s", True),
    "W3c": ("W3 drain, concurrency limit not binding (jobs/s)", "jobs_per_s", True),
    "W4": ("W4 pickup p50 (ms)", "p50_ms", False),
    "W4.p95": ("W4 pickup p95 (ms)", "p95_ms", False),
    "W4.p99": ("W4 pickup p99 (ms)", "p99_ms", False),
    "W5": ("W5 HTTP burst (submissions/s)", "jobs_per_s", True),
    "W5.p50": ("W5 HTTP latency p50 (ms)", "p50_ms", False),
    "W5.p99": ("W5 HTTP latency p99 (ms)", "p99_ms", False),
    "W5.errors": ("W5 HTTP errors", "errors", False),
    "W5x2": ("W5 HTTP burst, 2 API processes (submissions/s)", "jobs_per_s", True),
    "W5x2.p50": ("W5 HTTP latency p50 (ms), 2 API processes", "p50_ms", False),
    "W5x2.p99": ("W5 HTTP latency p99 (ms), 2 API processes", "p99_ms", False),
    "W5x2.errors": ("W5 HTTP errors, 2 API processes", "errors", False),
    # W6: {small}, {large}, {pending}: the row counts of the run's config
    "W6.c1s50": ("W6 claim of 1, p50 (ms), {small} done", "claim1_p50_ms_small", False),
    "W6.c1s99": ("W6 claim of 1, p99 (ms), {small} done", "claim1_p99_ms_small", False),
    "W6.c1l50": ("W6 claim of 1, p50 (ms), {large} done", "claim1_p50_ms_large", False),
    "W6.c1l99": ("W6 claim of 1, p99 (ms), {large} done", "claim1_p99_ms_large", False),
    "W6.cbs50": ("W6 claim of {batch}, p50 (ms), {small} done", "claim_batch_p50_ms_small", False),
    "W6.cbl50": ("W6 claim of {batch}, p50 (ms), {large} done", "claim_batch_p50_ms_large", False),
    "W6.ds": ("W6 drain (jobs/s), {small} done", "drain_jobs_per_s_small", True),
    "W6.dl": ("W6 drain (jobs/s), {large} done", "drain_jobs_per_s_large", True),
    "W6.rss": ("W6 worker peak RSS (MiB), {pending} pending", "rss_max_mb", False),
    # W6s, R1, W7: benchmarks/lifecycle.py
    "W6s.rows": ("W6s rows, last minute", "rows_last", False),
    "W6s.rowsg": ("W6s rows, last / 2nd minute", "rows_growth", False),
    "W6s.size": ("W6s table + indexes (MiB), last minute", "size_mb_last", False),
    "W6s.sizeg": ("W6s table + indexes, last / 2nd minute", "size_mb_growth", False),
    "W6s.p50": ("W6s pickup p50 (ms), last minute", "p50_ms_last", False),
    "W6s.p99": ("W6s pickup p99 (ms), last minute", "p99_ms_last", False),
    "W6s.p99g": ("W6s pickup p99, last / 2nd minute", "p99_ms_growth", False),
    "R1": ("R1 drain, done jobs kept (jobs/s)", "drain_keep_jobs_per_s", True),
    "R1.prune": ("R1 drain while pruning (jobs/s)", "drain_prune_jobs_per_s", True),
    "R1.ratio": ("R1 drain pruning / kept", "ratio", True),
    "R1.gone": ("R1 {retained} done jobs gone after (s)", "gone_s", False),
    "R1.age": ("R1 oldest done job seen (s)", "max_age_s", False),
    "W7": ("W7 wait answered p50 (ms)", "p50_ms", False),
    "W7.p99": ("W7 wait answered p99 (ms)", "p99_ms", False),
    "W7.conn": ("W7 DB connections, {waiters} waiting", "connections_waiting_max", False),
    "W7.connall": ("W7 DB connections, max", "connections_max", False),
}
# the targets: workload row -> (minimum ratio vesper/best peer, or None)
TARGETS = {"W1": 1.0, "W1c": 2.0, "W2": 1.0, "W3": 2.0, "W4.p99": 1.0}  # issue 20
# the absolute targets: (label, workload, system, metric, comparison, bound); a
# metric "a/b" is the ratio of two medians of the workload, a workload "a/b" the ratio of
# the metric's medians in the two workloads
ABSOLUTE: tuple[tuple[str, str, str, str, str, float], ...] = (
    ("W5 submissions/s", "W5", "vesper", "jobs_per_s", ">=", 2000),
    ("W5 latency p99 (ms)", "W5", "vesper", "p99_ms", "<", 100),
    ("W5 errors", "W5", "vesper", "errors", "==", 0),
    ("W5 submissions/s", "W5", "vesper-sqlite", "jobs_per_s", ">=", 2000),
    ("W5 latency p99 (ms)", "W5", "vesper-sqlite", "p99_ms", "<", 100),
    ("W5 errors", "W5", "vesper-sqlite", "errors", "==", 0),
    ("W6 claim of 1 p50, large/small", "W6", "vesper",
     "claim1_p50_ms_large/claim1_p50_ms_small", "<=", 1.2),
    ("W6 claim of 1 p99, large/small", "W6", "vesper",
     "claim1_p99_ms_large/claim1_p99_ms_small", "<=", 1.2),
    ("W6 claim of {batch} p50, large/small", "W6", "vesper",
     "claim_batch_p50_ms_large/claim_batch_p50_ms_small", "<=", 1.2),
    ("W6 claim of {batch} p99, large/small", "W6", "vesper",
     "claim_batch_p99_ms_large/claim_batch_p99_ms_small", "<=", 1.2),
    ("W6 worker peak RSS (MiB), {pending} pending", "W6", "vesper", "rss_max_mb", "<", 150),
    ("W1 enqueue-single (jobs/s)", "W1", "vesper-sqlite", "jobs_per_s", ">=", 2000),
    ("W3 drain, 1 process (jobs/s)", "W3", "vesper-sqlite", "jobs_per_s", ">=", 5000),
    # issue 16
    ("R1 drain pruning / kept", "R1", "vesper", "ratio", ">=", 0.9),
    ("R1 oldest done job - retention - interval (s)", "R1", "vesper", "age_over_bound_s", "<=", 0),
    ("R1 drain pruning / kept", "R1", "vesper-sqlite", "ratio", ">=", 0.9),
    ("R1 oldest done job - retention - interval (s)", "R1", "vesper-sqlite", "age_over_bound_s", "<=", 0),
    ("W6s rows, last / 2nd minute", "W6s", "vesper", "rows_growth", "<=", 1.2),
    ("W6s table + indexes, last / 2nd minute", "W6s", "vesper", "size_mb_growth", "<=", 1.2),
    ("W6s pickup p99, last / 2nd minute", "W6s", "vesper", "p99_ms_growth", "<=", 1.5),
    ("W7 wait answered p99 (ms)", "W7", "vesper", "p99_ms", "<", 50),
    # the API's pool (VESPER_DB_POOL_SIZE 10 + VESPER_DB_MAX_OVERFLOW 5) and its listener
    ("W7 DB connections, {waiters} waiting", "W7", "vesper", "connections_waiting_max", "<=", 16),
    # issue 20
    ("W5 2 API processes / 1 process", "W5x2/W5", "vesper", "jobs_per_s", ">=", 1.6),
)  # fmt: skip


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
    """vesper's best row (PostgreSQL) / the best peer's row, by medians; for latencies,
    the lowest of each."""
    out: dict[str, dict[str, Any]] = {}
    for workload, (_, _, higher) in SHOWN.items():
        ours = {v: c for v in VESPERS if (c := _cell(summary, workload, v)) is not None}
        peers = {p: c for p in PEERS if (c := _cell(summary, workload, p)) is not None}
        if not ours or not peers:
            continue
        pick = max if higher else min
        best = pick(peers, key=lambda p: peers[p]["median"])
        row = pick(ours, key=lambda v: ours[v]["median"])
        mine = ours[row]
        ratio = mine["median"] / peers[best]["median"] if peers[best]["median"] else None
        target = TARGETS.get(workload)
        met = None
        if target is not None and ratio is not None:
            met = ratio >= target if higher else ratio <= target
        out[workload] = {
            "vesper": mine["median"],
            "vesper_row": row,
            "best_peer": best,
            "best_peer_value": peers[best]["median"],
            "ratio": ratio,
            "higher_is_better": higher,
            "target": target,
            "met": met,
        }
    return out


def _median(summary: dict[str, Any], workload: str, system: str, metric: str) -> float | None:
    found = summary.get(workload, {}).get(system, {}).get(metric)
    return float(found["median"]) if isinstance(found, dict) else None


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The absolute targets whose figures this run has, each with its median and verdict."""
    out: list[dict[str, Any]] = []
    for label, workload, system, metric, sign, bound in ABSOLUTE:
        # a ratio: of two metrics of one workload, or of one metric in two workloads
        loads, names = workload.split("/"), metric.split("/")
        values = [
            _median(summary, loads[i % len(loads)], system, names[i % len(names)])
            for i in range(max(len(loads), len(names)))
        ]
        if any(v is None for v in values):
            continue
        value = values[0] if len(values) == 1 else (values[0] / values[1] if values[1] else None)
        met = None
        if value is not None:
            met = {">=": value >= bound, "<": value < bound, "<=": value <= bound}.get(
                sign, value == bound
            )
        out.append(
            {
                "label": label,
                "workload": workload,
                "system": system,
                "metric": metric,
                "value": value,
                "sign": sign,
                "target": bound,
                "met": met,
            }
        )
    return out


def _counts(config: dict[str, Any]) -> dict[str, str]:
    """The {small}, {large}, {pending}, {batch} of the W6 titles."""

    def short(n: int) -> str:
        if n >= 1_000_000 and n % 1_000_000 == 0:
            return f"{n // 1_000_000}M"
        if n >= 1_000 and n % 1_000 == 0:
            return f"{n // 1_000}k"
        return f"{n:,}"

    return {
        "small": short(int(config.get("scale_small", 10_000))),
        "large": short(int(config.get("scale_large", 1_000_000))),
        "pending": short(int(config.get("rss_pending", 1_000_000))),
        "batch": str(config.get("scale_batch", 10)),
        "retained": short(int(config.get("retention_jobs", 10_000))),
        "waiters": short(int(config.get("wait_jobs", 500))),
    }


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


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
    counts = _counts(document.get("config", {}))
    table = Table(title="median (min-max) of each system's runs")
    table.add_column("workload")
    for system in systems:
        table.add_column(system, justify="right")
    for workload, (title, _, _) in SHOWN.items():
        cells = [_cell(summary, workload, s) for s in systems]
        if not any(cells):
            continue
        table.add_row(
            title.format(**counts),
            *(
                f"{_fmt(c['median'])} ({_fmt(c['min'])}-{_fmt(c['max'])})" if c else "-"
                for c in cells
            ),
        )
    console.print(table)
    if document["ratios"]:
        ratio_table = Table(title="vesper's best row (PostgreSQL) / best peer's, medians")
        for column in ("workload", "vesper", "best peer", "ratio", "target", "met"):
            ratio_table.add_column(column, justify="right" if column != "workload" else "left")
        for workload, row in document["ratios"].items():
            target = row["target"]
            sign = ">=" if row["higher_is_better"] else "<="
            ratio_table.add_row(
                SHOWN[workload][0],
                f"{row.get('vesper_row', 'vesper')} {_fmt(row['vesper'])}",
                f"{row['best_peer']} {_fmt(row['best_peer_value'])}",
                f"{row['ratio']:.2f}" if row["ratio"] is not None else "-",
                f"{sign} {target}" if target is not None else "",
                {True: "yes", False: "NO", None: ""}[row["met"]],
            )
        console.print(ratio_table)
    if document.get("targets"):
        target_table = Table(title="absolute targets (issues 6, 16 and 20), medians")
        for column in ("target", "system", "measured", "bound", "met"):
            target_table.add_column(column, justify="left" if column == "target" else "right")
        for row in document["targets"]:
            value = row["value"]
            ratio = (
                "/" in row["metric"]
                or "/" in row["workload"]
                or row["metric"].endswith(("_growth", "ratio"))
            )
            target_table.add_row(
                row["label"].format(**counts),
                row["system"],
                "-" if value is None else (f"{value:.2f}" if ratio else _fmt(value)),
                f"{row['sign']} {row['target']:g}",
                {True: "yes", False: "NO", None: ""}[row["met"]],
            )
        console.print(target_table)
    for error in document["errors"]:
        console.print(f"[red]failed run:[/red] {error}")
