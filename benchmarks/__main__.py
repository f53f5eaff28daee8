"""`python -m benchmarks`: the same as `vesper bench`."""

from __future__ import annotations

from vesper.entrypoints.bench import bench

bench()
