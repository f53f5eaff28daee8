"""R16 with a fleet: several claimers never start a job while a strictly higher-priority
one has been due and waiting for longer than a poll (+0.5 s), under a live producer."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from tests.faults.lab import POLL_S, Lab, RowResult
from tests.faults.rows.common import enqueue, scaled, timed, wait_drained
from vesper.domain.submission import JobRequest

# a job claimed within this of the one it "should" have gone before was taken in the
# same moment by another claimer (SKIP LOCKED passes over it): not an inversion
CONCURRENT = timedelta(milliseconds=200)


def inversions(rows: Sequence[Mapping[str, Any]], *, waited: timedelta) -> list[tuple[str, str]]:
    """(started, passed over) pairs: a job started at t while a strictly higher-priority
    job, due (run_at and created_at) since before t - waited, was still unclaimed at t
    (its first claim came later than t + CONCURRENT). Uses `started_at`, so only for
    runs without re-claims."""
    started = sorted(
        (r for r in rows if r["started_at"] is not None), key=lambda r: r["started_at"]
    )
    found: list[tuple[str, str]] = []
    for job in started:
        t = job["started_at"]
        for other in started:
            if (
                other["priority"] > job["priority"]
                and max(other["run_at"], other["created_at"]) <= t - waited
                and other["started_at"] > t + CONCURRENT
            ):
                found.append((job["job_id"], other["job_id"]))
                break
    return found


@timed
def r16_fleet(lab: Lab) -> RowResult:
    """3 worker processes x 2 slots while a producer outpaces them with random
    priorities: no priority inversion longer than poll + 0.5 s."""
    result = RowResult("R16-fleet")
    cluster = lab.need_cluster()
    database = lab.pg_database()
    app = lab.pg_app(database)
    total = scaled(lab, 330, 1100)
    env = lab.env(cluster.env(database), WORKERS="2")
    for _ in range(3):
        lab.worker(env)
    rng = random.Random(1616)
    # 6 slots of 40-80 ms jobs take ~100 jobs/s; 150/s keeps a backlog of mixed priorities
    for start in range(0, total, 15):
        enqueue(
            app,
            [
                JobRequest(
                    type="record",
                    priority=rng.randint(0, 10),
                    payload={"sleep": 0.04, "sleep_max": 0.08},
                )
                for _ in range(min(15, total - start))
            ],
        )
        time.sleep(0.1)
    wait_drained(lab, result, database, total, timeout=scaled(lab, 90, 300))
    rows = lab.dump_pg(database)
    report = lab.check(rows)
    result.expect_clean(report)
    found = inversions(rows, waited=timedelta(seconds=POLL_S + 0.5))
    result.figures.update(
        jobs=total,
        reclaimed=sum(1 for r in rows if r["attempts"] > 1),
        inversions=len(found),
        processes=len({e["pid"] for e in lab.ledger()}),
    )
    result.expect(not found, f"{len(found)} starts passed over a higher priority: {found[:3]}")
    result.expect(all(r["attempts"] == 1 for r in rows), "a job was claimed twice")
    return result
