"""SQLite reads due jobs in claim order from an index: no claim sorts them.

A migration that copies vesper_jobs (SQLite's way to add some columns) rebuilds its
indexes from reflection; the claim index once lost its `priority DESC` so, and every
claim of all queues sorted the due jobs of the top priority (10x slower).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from vesper.adapters.sql import open_store
from vesper.adapters.sql.sqlite import CLAIMS


@pytest.mark.parametrize("shape", sorted(CLAIMS))
def test_claims_of_a_migrated_database_use_an_index_in_claim_order(
    tmp_path: Path, shape: tuple[bool, str]
) -> None:
    path = tmp_path / "jobs.db"
    open_store(f"sqlite:///{path}").close()
    compiled = CLAIMS[shape].compile()
    params = dict.fromkeys(compiled.params)
    sql = str(compiled)
    typed, queues = shape
    if typed:
        sql = sql.replace("IN (__[POSTCOMPILE_types])", "IN ('t')")
    if queues == "many":
        sql = sql.replace("IN (__[POSTCOMPILE_queues])", "IN ('a', 'b')")
    with sqlite3.connect(path) as conn:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    assert not [step for step in plan if "TEMP B-TREE" in step], plan
    assert any("vesper_jobs_claim_idx" in s or "queue_claim_idx" in s for s in plan), plan
