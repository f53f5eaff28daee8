"""The soak's processes: 4 workers (worker 0 reaches PostgreSQL through the TCP proxy;
2 and 3 serve only the limited queues) and 2 API processes, each replaceable after a
fault, every one kept for its log."""

from __future__ import annotations

import signal
from collections.abc import Mapping

from tests.faults.lab import Lab
from tests.faults.proxy import TcpProxy
from tests.faults.rows.skew import skewed
from tests.integration.harness import WorkerProcess
from tests.integration.service import Service

SOAK_APP = "tests.faults.apps.soak:app"
WORKERS = 4
APIS = 2
# Workers 0 and 1 serve every queue from one pool of 8 slots; 2 and 3 serve only the
# limited queues (tests/faults/soak/pieces.py), 2 slots each. In one pool a limited
# queue gets only the slots the unlimited queues leave, which the busy default queue
# never did on a loaded machine (CHANGELOG, issue 21, open); so both kinds of process
# claim from the limited queues, and the limits hold across four processes.
POOL_SLOTS = "8"
LIMITED_SLOTS = "soak-concurrency=2,soak-rate=2,soak-keys=2"


class Fleet:
    def __init__(self, lab: Lab, env: Mapping[str, str], proxy: TcpProxy) -> None:
        self.lab = lab
        self.env = dict(env)
        self.proxy = proxy
        self.workers: list[WorkerProcess] = []
        self.apis: list[Service] = []
        self.every_process: list[WorkerProcess | Service] = []  # for lease-lost lines
        self.skewed: dict[int, str] = {}  # worker index -> FAKETIME offset

    def worker_env(self, index: int) -> dict[str, str]:
        env = dict(self.env)
        if index < 2:
            env["WORKERS"] = POOL_SLOTS
        else:
            env["VESPER_QUEUES"] = LIMITED_SLOTS
        if index == 0:
            env["DB_PORT"] = str(self.proxy.port)
        if index in self.skewed:
            env.update(skewed(self.skewed[index]))
        return env

    def start(self) -> None:
        self.workers = [self._worker(i) for i in range(WORKERS)]
        self.apis = [self._api() for _ in range(APIS)]

    def _worker(self, index: int) -> WorkerProcess:
        process = self.lab.worker(self.worker_env(index), app=SOAK_APP)
        self.every_process.append(process)
        return process

    def _api(self, port: int | None = None) -> Service:
        service = self.lab.service(self.env, ("api",), port=port)
        self.every_process.append(service)
        return service

    def urls(self) -> list[str]:
        return [api.url for api in self.apis]

    def replace_worker(self, index: int, *, term: bool = False) -> tuple[int, int]:
        """Stop worker `index` (kill -9, or SIGTERM and its graceful exit) and start a new
        one with the slot's environment; returns (old pid, new pid)."""
        old = self.workers[index]
        old.signal(signal.SIGTERM if term else signal.SIGKILL)
        try:
            old.wait(30)
        except Exception:  # a graceful stop that hangs is killed (the run logs the fault)
            old.signal(signal.SIGKILL)
            old.wait(10)
        self.workers[index] = self._worker(index)
        return old.pid, self.workers[index].pid

    def restart_api(self, index: int) -> tuple[int, int]:
        old = self.apis[index]
        old.popen.send_signal(signal.SIGKILL)
        old.popen.wait(10)
        self.apis[index] = self._api(port=old.port)
        return old.popen.pid, self.apis[index].popen.pid

    def terminate(self) -> None:
        """SIGTERM every live process (graceful), so that the logs are complete."""
        live = [*self.workers, *self.apis]
        for process in live:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in live:
            try:
                process.popen.wait(30)
            except Exception:
                process.popen.send_signal(signal.SIGKILL)
