"""What every vesper session on PostgreSQL runs with: no JIT compiling.

Sessions forbid sorts (`enable_sort=off`: the claims stay on their ordered index
scans); the price that puts on a statement that must sort (10^10) passes
`jit_above_cost`, and the server then compiled such a statement at every call. A
key-concurrency claim, which sorts its queue's due jobs by key, took 140-220 ms of
which 190 ms was JIT, under the lock of its queue's row: four workers claimed the
queue 3 times a second.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from vesper.adapters.sql.engines import open_engine, sql_url

# A statement with a sort, shaped as the key-concurrency claim's pick
SORTING = (
    "SELECT id FROM (SELECT id, concurrency_key, priority, run_at, seq, row_number() "
    "OVER (PARTITION BY concurrency_key ORDER BY priority DESC, run_at, seq) AS rn "
    "FROM vesper_jobs WHERE status IN ('pending', 'failed') AND queue = 'k') AS c "
    "WHERE rn <= 1 ORDER BY priority DESC, run_at, seq LIMIT 4"
)


@pytest.fixture
def engine(postgres_database: str) -> Iterator[Engine]:
    engine = open_engine(sql_url(postgres_database), pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


def test_sessions_do_not_jit_compile(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("SHOW jit")).scalar() == "off"
        assert conn.execute(text("SHOW enable_sort")).scalar() == "off"
        # the server would JIT this plan: its cost is past jit_above_cost
        above = float(conn.execute(text("SHOW jit_above_cost")).scalar_one())
        [[plan]] = conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {SORTING}")).all()
    found = plan if isinstance(plan, list) else json.loads(plan)
    assert found[0]["Plan"]["Total Cost"] > above
    assert "JIT" not in found[0], found[0]["JIT"]
