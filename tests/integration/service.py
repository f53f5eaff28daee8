"""`vesper serve` (and friends) as real processes on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.integration.harness import REPO, wait_until

EXAMPLE_APP = "examples.app:app"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Service:
    """One `vesper <command>` process, its port, its log and an HTTP client for it."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        command: Sequence[str] = ("serve", "--app", EXAMPLE_APP),
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        full_env = {
            **os.environ,
            "API_ADDR": f"127.0.0.1:{self.port}",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "vesper.entrypoints.cli", *command],
            cwd=REPO,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=self.url, timeout=10.0)

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"vesper exited early:\n{self.output()[-3000:]}")
            try:
                return self.http.get("/ready").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=timeout, interval=0.1, what=f"{self.url}/ready")

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, **kwargs)

    def terminate(self, timeout: float = 30.0) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        self.http.close()
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        self._log.close()

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")


@contextmanager
def services(
    envs: Sequence[Mapping[str, str]], tmp_path: Path, **kwargs: Any
) -> Iterator[list[Service]]:
    started: list[Service] = []
    try:
        for index, env in enumerate(envs):
            started.append(Service(env, tmp_path / f"service-{index}.log", **kwargs))
        for service in started:
            service.wait_ready()
        yield started
    finally:
        for service in started:
            service.stop()
