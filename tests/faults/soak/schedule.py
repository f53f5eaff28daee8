"""The fault schedule: a pure function of the seed, so a failing seed replays its faults.

Faults never overlap: each starts after the one before has ended, after a seeded gap.
Times are seconds from the start of the workload; a fault that the machine makes late
runs as soon as it can (the run logs the time it really ran).
"""

from __future__ import annotations

import random

import attrs

# kind -> (weight, seconds it lasts, how many targets)
KINDS: dict[str, tuple[int, float, int]] = {
    "kill_worker": (3, 0.0, 4),  # kill -9 a worker process; a new one replaces it
    "kill_api": (2, 0.0, 2),  # kill -9 an API process; it is started again on its port
    "sigstop": (2, 6.0, 4),  # SIGSTOP a worker past its lease (4 s), then SIGCONT
    "pg_restart": (1, 0.0, 1),  # pg_ctl restart -m fast, or stop -m immediate + start
    "backend_kill": (2, 0.0, 1),  # pg_terminate_backend of half of vesper's sessions
    "blackhole": (2, 6.0, 1),  # the proxied worker's traffic held past its lease
    "skew": (1, 15.0, 3),  # a worker replaced (SIGTERM) by one whose clock is off
}
SKEWS = ("+300", "-300", "+45", "-45")


@attrs.frozen
class Planned:
    at: float  # seconds from the start of the workload
    kind: str
    target: int  # which worker or API (index in the fleet)
    seconds: float  # how long the fault lasts (0: an instant)
    detail: str = ""

    def line(self) -> str:
        extra = f" {self.detail}" if self.detail else ""
        return f"{self.at:8.1f}s {self.kind:<12} target={self.target} for={self.seconds:g}s{extra}"


def plan(
    seed: int,
    minutes: float,
    *,
    kinds: tuple[str, ...] = tuple(KINDS),
    warmup: float = 10.0,
    tail: float = 10.0,
    gap: tuple[float, float] = (3.0, 12.0),
) -> list[Planned]:
    rng = random.Random(seed)
    weights = [KINDS[k][0] for k in kinds]
    schedule: list[Planned] = []
    t = warmup
    end = minutes * 60 - tail
    first_round = list(kinds)  # every kind once, in a seeded order, then at random
    rng.shuffle(first_round)
    while True:
        kind = first_round.pop(0) if first_round else rng.choices(kinds, weights)[0]
        _, seconds, targets = KINDS[kind]
        target = rng.randrange(targets)
        detail = ""
        if kind == "pg_restart":
            detail = rng.choice(("fast", "fast", "immediate"))
        elif kind == "skew":
            target += 1  # worker 0 goes through the proxy; 1-3 may be skewed
            detail = rng.choice(SKEWS)
        elif kind == "backend_kill":
            detail = f"seed={rng.randrange(2**31)}"
        if t + seconds > end:
            return schedule
        schedule.append(Planned(round(t, 1), kind, target, seconds, detail))
        t += seconds + rng.uniform(*gap)
