"""The nemesis: injects the seeded schedule into the fleet, one fault at a time, and
records each in the lab's fault log (the checker's input) and in `done` (what ran when)."""

from __future__ import annotations

import random
import signal
import threading
import time
from datetime import UTC, datetime
from typing import Any

from tests.faults.lab import Lab
from tests.faults.soak.fleet import Fleet
from tests.faults.soak.schedule import Planned


class Nemesis:
    def __init__(self, lab: Lab, fleet: Fleet, database: str, schedule: list[Planned]) -> None:
        self.lab = lab
        self.fleet = fleet
        self.database = database
        self.schedule = schedule
        self.done: list[dict[str, Any]] = []  # planned, started, seconds, error
        # monotonic seconds until which a session may idle in a transaction because a
        # fault holds its process or its traffic (the activity sampler skips that time)
        self.quiet_until = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nemesis", daemon=True)
        self._origin = 0.0

    def start(self, origin: float) -> Nemesis:
        self._origin = origin
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        for planned in self.schedule:
            if self._stop.wait(max(0.0, self._origin + planned.at - time.monotonic())):
                return
            started = time.monotonic()
            error = ""
            try:
                self.inject(planned)
            except Exception as exc:  # recorded and reported: a fault that could not run
                error = f"{type(exc).__name__}: {exc}"[:300]
            self.done.append(
                {
                    "planned": planned,
                    "at": started - self._origin,
                    "seconds": time.monotonic() - started,
                    "error": error,
                }
            )

    # -- the faults -------------------------------------------------------------------

    def record(self, kind: str, pid: int | None, **extra: Any) -> dict[str, Any]:
        try:
            db_now = self.lab.db_now(self.database)
        except Exception:  # the database is down: the local clock (same host)
            db_now = datetime.now(UTC)
        fault = {"kind": kind, "pid": pid, "mono": time.monotonic_ns(), "db_now": db_now, **extra}
        self.lab.faults.append(fault)
        return fault

    def inject(self, planned: Planned) -> None:
        inject = getattr(self, f"_{planned.kind}", None)
        if inject is None:
            raise ValueError(f"unknown fault {planned.kind!r}")
        inject(planned)

    def _kill_worker(self, planned: Planned) -> None:
        victim = self.fleet.workers[planned.target]
        victim.signal(signal.SIGKILL)  # recorded after: every run it began is before
        self.record("kill", victim.pid)
        self.fleet.replace_worker(planned.target)

    def _kill_api(self, planned: Planned) -> None:
        api = self.fleet.apis[planned.target]
        api.popen.send_signal(signal.SIGKILL)
        self.record("api_kill", api.popen.pid)
        self.fleet.restart_api(planned.target)

    def _sigstop(self, planned: Planned) -> None:
        victim = self.fleet.workers[planned.target]
        self.quiet_until = float("inf")
        victim.signal(signal.SIGSTOP)
        self.record("stop", victim.pid, overlap_ok=True)
        self._stop.wait(planned.seconds)
        victim.signal(signal.SIGCONT)
        self.quiet_until = time.monotonic() + 3.0

    def _pg_restart(self, planned: Planned) -> None:
        cluster = self.lab.need_cluster()
        fault = self.record("pg_restart", None, mode=planned.detail)
        if planned.detail == "immediate":
            cluster.stop("immediate")
            cluster.start()
        else:
            cluster.restart("fast")
        fault["mono_end"] = time.monotonic_ns()

    def _backend_kill(self, planned: Planned) -> None:
        cluster = self.lab.need_cluster()
        rng = random.Random(planned.detail)
        sessions = cluster.execute(
            """SELECT pid FROM pg_stat_activity
               WHERE datname = %s AND application_name LIKE 'vesper%%'
                 AND application_name <> 'vesper-faults-harness' ORDER BY pid""",
            (self.database,),
        )
        chosen = [pid for (pid,) in sessions if rng.random() < 0.5]
        fault = self.record("backend_kill", None, backends=len(chosen))
        for pid in chosen:
            cluster.execute("SELECT pg_terminate_backend(%s)", (pid,))
        fault["mono_end"] = time.monotonic_ns()

    def _blackhole(self, planned: Planned) -> None:
        self.quiet_until = float("inf")
        self.fleet.proxy.blackhole()
        self.record("blackhole", self.fleet.workers[0].pid)
        self._stop.wait(planned.seconds)
        self.fleet.proxy.resume()
        self.quiet_until = time.monotonic() + 3.0

    def _skew(self, planned: Planned) -> None:
        """A worker replaced (SIGTERM, a graceful stop) by one whose wall clock is off,
        which is replaced back by a true one after `seconds`."""
        fleet, index = self.fleet, planned.target
        self.record("sigterm", fleet.workers[index].pid)
        fleet.skewed[index] = planned.detail
        _, new = fleet.replace_worker(index, term=True)
        self.record("skew", new, offset=planned.detail)
        self._stop.wait(planned.seconds)
        self.record("sigterm", new)
        del fleet.skewed[index]
        fleet.replace_worker(index, term=True)

    def settle(self) -> None:
        """Undo whatever a stopped nemesis may have left: every process running, traffic
        flowing, clocks true."""
        self.fleet.proxy.resume()
        for worker in self.fleet.workers:
            worker.signal(signal.SIGCONT)
