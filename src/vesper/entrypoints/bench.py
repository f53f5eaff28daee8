"""`vesper bench`: the benchmark of docs/benchmarks.md (W1-W4, vesper and its peers).

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

_WORKLOADS = ("W1", "W2", "W3", "W3x2", "W4")  # W5 (HTTP burst) and W6 (scale): not yet
_DEFAULT = ",".join(_WORKLOADS)


def _harness() -> Any:
    """benchmarks.suite from the checkout this module runs from (or the current directory)."""
    for root in (Path(__file__).resolve().parents[3], Path(os.getcwd())):
        if (root / "benchmarks" / "suite.py").exists():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            return importlib.import_module("benchmarks.suite")
    raise click.UsageError("vesper bench runs from a source checkout (its benchmarks/ folder)")


@click.command()
@click.option("--peers", is_flag=True, help="Also run procrastinate 3.10 and pgqueuer 1.6.")
@click.option(
    "--stores",
    default="postgres,sqlite",
    show_default=True,
    help="vesper's stores to run: postgres, sqlite.",
)
@click.option(
    "--workloads", default=_DEFAULT, show_default=True, help=f"Any of {','.join(_WORKLOADS)}."
)
@click.option("--repeats", type=click.IntRange(1, 20), default=3, show_default=True)
@click.option(
    "--scale",
    type=click.FloatRange(0.01, 1.0),
    default=1.0,
    show_default=True,
    help="Multiply every job count (a quick check: 0.1).",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
def bench(
    peers: bool, stores: str, workloads: str, repeats: int, scale: float, json_path: Path | None
) -> None:
    """Benchmark vesper (and, with --peers, its peers) on the local PostgreSQL and SQLite.

    PostgreSQL: a scratch database on VESPER_TEST_DATABASE_URL (default: the local
    server), dropped afterwards. Prints the median (min-max) table and, with --peers,
    vesper / best peer.
    """
    chosen = [w.strip() for w in workloads.split(",") if w.strip()]
    unknown = sorted(set(chosen) - set(_WORKLOADS))
    if unknown:
        raise click.BadParameter(f"unknown workloads {unknown}", param_hint="--workloads")
    suite = _harness()
    config = suite.Config(repeats=repeats)
    for name in ("single_jobs", "batch_jobs", "drain_jobs", "pickup_jobs", "http_requests"):
        setattr(config, name, max(10, int(getattr(config, name) * scale)))
    suite.run_bench(
        peers=peers,
        stores=[s.strip() for s in stores.split(",") if s.strip()],
        workloads=chosen,
        config=config,
        json_path=json_path,
    )
