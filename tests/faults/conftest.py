"""Fixtures of the fault matrix: one disposable PostgreSQL cluster per session, a Lab
per test. Outside CI a machine without PostgreSQL 15 binaries skips; with CI=true the
tests fail instead, so that a green run never hides an untested row."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.cluster import ClusterError, PgCluster, start_cluster
from tests.faults.lab import Lab
from vesper.testing.postgres import in_ci


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "faults: the fault matrix of docs/reliability.md (real processes, a disposable PostgreSQL)",
    )


@pytest.fixture(scope="session")
def cluster() -> Iterator[PgCluster]:
    try:
        started = start_cluster()
    except (ClusterError, OSError, subprocess.SubprocessError) as exc:
        reason = f"cannot start a disposable PostgreSQL cluster: {exc}"
        if in_ci():
            pytest.fail(f"{reason}; CI=true, so the fault tests may not be skipped")
        pytest.skip(reason)
    try:
        yield started
    finally:
        started.destroy()


@pytest.fixture
def lab(cluster: PgCluster, tmp_path: Path) -> Iterator[Lab]:
    if not cluster.running():  # a row that stopped it and failed midway
        cluster.start()
        cluster.wait_accepting()
    made = Lab(tmp_path, cluster)
    try:
        yield made
    finally:
        made.close()
