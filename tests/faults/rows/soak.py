"""R17: a soak with random chaos (a script option only, bounded by --minutes)."""

from __future__ import annotations

import random
import signal
import time

from tests.faults.checker import Options
from tests.faults.lab import Lab, RowResult, kill
from tests.faults.producer import Steady
from tests.faults.proxy import TcpProxy
from tests.faults.rows.common import timed, wait_drained
from tests.integration.harness import WorkerProcess

SOAK_JOB = {"type": "record", "payload": {"sleep": 0.05, "sleep_max": 0.5}}


@timed
def r17(
    lab: Lab, *, minutes: float = 30.0, every: float = 60.0, production_timings: bool = True
) -> RowResult:
    """Mixed producer at 50 req/s; every `every` seconds one of: kill -9 a worker,
    SIGSTOP one for 40 s, pg_ctl restart -m fast, LISTEN kill, a 20 s black-hole."""
    result = RowResult("R17")
    cluster = lab.need_cluster()
    database = lab.pg_database()
    timings = {
        "VESPER_LEASE": "30s",
        "VESPER_HEARTBEAT": "5s",
        "VESPER_DEAD_AFTER": "30s",
        "VESPER_POLL_INTERVAL": "1s",
    }
    env = lab.env(cluster.env(database), WORKERS="4", **(timings if production_timings else {}))
    proxy = lab.proxy()
    workers = [lab.worker(env) for _ in range(2)] + [
        lab.worker({**env, "DB_PORT": str(proxy.port)})
    ]
    api = lab.service(env, ("api",))
    producer = Steady(api.url, lab.responses, rate=50, body=SOAK_JOB).start()
    rng = random.Random(17)
    started = time.monotonic()
    end = started + minutes * 60
    # memory: the API and the third worker are never killed; sampled after a warm-up
    steady = {"api": api.popen.pid, "worker": workers[2].pid}
    first: dict[str, int] = {}
    chaos: list[str] = []
    try:
        while time.monotonic() < end:
            time.sleep(min(every, max(0.0, end - time.monotonic())))
            if time.monotonic() >= end:
                break
            if not first:
                first = {name: _rss_kib(pid) for name, pid in steady.items()}
            action = rng.choice(["kill", "stop", "restart", "listen", "blackhole"])
            chaos.append(action)
            _inject(lab, action, rng, workers, env, proxy, database)
    finally:
        producer.stop()
    last = {name: _rss_kib(pid) for name, pid in steady.items()}
    hours = max((time.monotonic() - started - every) / 3600, 1e-9)
    for name, kib in last.items():
        if first.get(name):
            drift = (kib - first[name]) / first[name] / hours * 100
            result.figures[f"{name}_rss_mb"] = kib / 1024
            result.figures[f"{name}_rss_drift_pct_per_h"] = drift
            # a short soak extrapolates noise: the 10 %/h bound is judged from 20 minutes
            if minutes >= 20:
                result.expect(drift < 10, f"{name} RSS grows {drift:.1f}%/h")
    wait_drained(lab, result, database, len(producer.keys), timeout=300)
    report = lab.check(lab.dump_pg(database), Options(lease_lost=lab.lease_lost(workers)))
    result.expect_clean(report)
    result.figures.update(minutes=minutes, submitted=len(producer.keys), chaos=",".join(chaos))
    return result


def _inject(
    lab: Lab,
    action: str,
    rng: random.Random,
    workers: list[WorkerProcess],
    env: dict[str, str],
    proxy: TcpProxy,
    database: str,
) -> None:
    """One chaos event; a killed worker is replaced by a new one (a supervisor's job)."""
    cluster = lab.need_cluster()
    if action == "kill":
        i = rng.randrange(2)
        kill(workers[i])
        lab.fault("kill", workers[i].pid, database=database)
        workers[i].wait(10)
        workers[i] = lab.worker(env)
    elif action == "stop":
        victim = workers[rng.randrange(2)]
        kill(victim, signal.SIGSTOP)
        lab.fault("stop", victim.pid, database=database, overlap_ok=True)
        time.sleep(40)
        kill(victim, signal.SIGCONT)
    elif action == "restart":
        with lab.injecting("pg_restart", None, database=database):
            cluster.stop("fast")
        cluster.start()
    elif action == "listen":
        lab.fault("listen_kill", None, database=database)
        cluster.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%%'"
        )
    else:
        proxy.blackhole()
        # shorter than the lease, the cut-off worker keeps its jobs and finishes them
        # itself: a fault that orphans nothing (the checker expects no re-claim)
        orphans = float(env.get("VESPER_LEASE", "4s").removesuffix("s")) < 20
        lab.fault("blackhole" if orphans else "brownout", workers[2].pid, database=database)
        time.sleep(20)
        proxy.resume()


def _rss_kib(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status", encoding="ascii"):  # noqa: SIM115
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
