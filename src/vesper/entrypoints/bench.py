"""`vesper bench`: the benchmark of docs/benchmarks.md (W1-W7 and R1, vesper and its peers).

The harness lives in the source checkout's `benchmarks/` package (with the peers'
drivers and their requirements), not in the wheel: run it from a clone.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import click

_WORKLOADS = (
    "W1", "W1c", "W2", "W3", "W3x2", "W3q", "W3c", "W4", "W5", "W5x2", "W6", "W6s", "R1", "W7",
)  # fmt: skip
_DEFAULT = ",".join(_WORKLOADS)
# scaled by --scale (at least 10 each)
_COUNTS = (
    "single_jobs",
    "concurrent_jobs",
    "batch_jobs",
    "drain_jobs",
    "pickup_jobs",
    "http_requests",
    "http_warmup",
    "scale_small",
    "scale_large",
    "scale_claims",
    "scale_drain_jobs",
    "rss_pending",
    "retention_jobs",
    "wait_jobs",
)


def _harness() -> Any:
    """benchmarks.suite from the checkout this module runs from (or the current directory)."""
    for root in (Path(__file__).resolve().parents[3], Path(os.getcwd())):
        if (root / "benchmarks" / "suite.py").exists():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            return importlib.import_module("benchmarks.suite")
    raise click.UsageError("vesper bench runs from a source checkout (its benchmarks/ folder)")


@click.command()
@click.option(
    "--peers",
    is_flag=True,
    help="Also run procrastinate 3.10 and pgqueuer 1.6 (asyncpg, and psycopg).",
)
@click.option(
    "--stores",
    default="postgres,sqlite",
    show_default=True,
    help="vesper's stores to run: postgres, sqlite.",
)
@click.option(
    "--workloads",
    default=_DEFAULT,
    show_default=True,
    help="Any of these, comma-separated (W5, W5x2, R1, W7, W3q, W3c: vesper only; W6, W6s:"
    " vesper on PostgreSQL only).",
)
@click.option("--repeats", type=click.IntRange(1, 20), default=3, show_default=True)
@click.option(
    "--scale",
    type=click.FloatRange(0.01, 1.0),
    default=1.0,
    show_default=True,
    help="Multiply every job count (a quick check: 0.1).",
)
@click.option(
    "--http-requests",
    type=click.IntRange(min=10),
    default=10_000,
    show_default=True,
    help="W5, W5x2: POST /jobs per run.",
)
@click.option(
    "--http-connections",
    type=click.IntRange(1, 10_000),
    default=256,
    show_default=True,
    help="W5, W5x2: concurrent connections.",
)
@click.option(
    "--w6-small",
    type=click.IntRange(min=0),
    default=10_000,
    show_default=True,
    help="W6: done rows in the small table.",
)
@click.option(
    "--w6-large",
    type=click.IntRange(min=0),
    default=1_000_000,
    show_default=True,
    help="W6: done rows in the large table.",
)
@click.option(
    "--w6-pending",
    type=click.IntRange(min=10),
    default=1_000_000,
    show_default=True,
    help="W6: pending rows while the worker's RSS is sampled.",
)
@click.option(
    "--w6-rss-seconds",
    type=click.FloatRange(1, 600),
    default=30.0,
    show_default=True,
    help="W6: how long the worker drains while its RSS is sampled.",
)
@click.option(
    "--w6s-minutes",
    type=click.FloatRange(3, 120),
    default=5.0,
    show_default=True,
    help="W6s: how long the steady flow runs (one run, whatever --repeats).",
)
@click.option(
    "--w6s-rate",
    type=click.FloatRange(10, 20_000),
    default=1_000.0,
    show_default=True,
    help="W6s: jobs queued per second.",
)
@click.option(
    "--w6s-naptime",
    type=click.FloatRange(1, 600),
    default=None,
    help="W6s, on a server with autovacuum off: the naptime the harness's stand-in for"
    " autovacuum uses (default: the server's autovacuum_naptime).",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def bench(
    peers: bool,
    stores: str,
    workloads: str,
    repeats: int,
    scale: float,
    http_requests: int,
    http_connections: int,
    w6_small: int,
    w6_large: int,
    w6_pending: int,
    w6_rss_seconds: float,
    w6s_minutes: float,
    w6s_rate: float,
    w6s_naptime: float | None,
    json_path: Path | None,
) -> None:
    """Benchmark vesper (and, with --peers, its peers) on the local PostgreSQL and SQLite.

    PostgreSQL: a scratch database on VESPER_TEST_DATABASE_URL (default: the local
    server), dropped afterwards. Prints the median (min-max) table, with --peers vesper /
    best peer, and the absolute targets (W5, W6, SQLite). W5 needs wrk on PATH.
    """
    chosen = [w.strip() for w in workloads.split(",") if w.strip()]
    unknown = sorted(set(chosen) - set(_WORKLOADS))
    if unknown:
        raise click.BadParameter(f"unknown workloads {unknown}", param_hint="--workloads")
    suite = _harness()
    config = suite.Config(
        repeats=repeats,
        http_requests=http_requests,
        http_connections=http_connections,
        scale_small=w6_small,
        scale_large=w6_large,
        rss_pending=w6_pending,
        rss_seconds=w6_rss_seconds,
        steady_minutes=w6s_minutes,
        steady_rate=w6s_rate,
        steady_naptime_s=w6s_naptime,
    )
    for name in _COUNTS:
        setattr(config, name, max(10, int(getattr(config, name) * scale)))
    suite.run_bench(
        peers=peers,
        stores=[s.strip() for s in stores.split(",") if s.strip()],
        workloads=chosen,
        config=config,
        json_path=json_path,
    )
