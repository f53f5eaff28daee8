"""W5 (HTTP burst): POST /jobs from many connections against one real `vesper api` process
(W5x2: `vesper api --processes 2`, two processes accepting on one socket).

The load generator is wrk (`apt-get install wrk`), driven by http_burst.lua: C, one
event loop per thread, LuaJIT for the request bodies. A Python client (asyncio + httpx or
aiohttp) spends more CPU per request than the server it measures, and on a 2-core machine
it would compete with the API process and PostgreSQL for the same cores; wrk needs a few
percent of a core at these rates (the run records its CPU time next to the API
process's, so that a saturated client would show).

One run: start `vesper api` on a free loopback port (the store of the system: PostgreSQL
or SQLite), wait for /health (and, with several processes, for each one's /metrics),
warm it up with a short burst (the first requests open the store, its pool connects,
statements are prepared), wait until the API has answered what the warm-up left in
flight, then the measured burst. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.systems import REPO, System, wait_for

LUA = Path(__file__).resolve().parent / "http_burst.lua"
READY_TIMEOUT = 60.0


def free_port(count: int = 1) -> int:
    """A free loopback port p, with p + 1 ... p + count - 1 free too (bounded attempts)."""
    for _ in range(50):
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            try:
                for offset in range(1, count):
                    other = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    other.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no {count} consecutive free ports")


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("W5 needs wrk on PATH (Debian/Ubuntu: apt-get install wrk)")
    return found


class ApiProcess:
    """`vesper api` for a system's store on 127.0.0.1:<free port>; SIGTERM, then SIGKILL.

    With `processes` > 1 (`vesper api --processes N`) a request on the shared port reaches
    any one of the children: each child serves its own /metrics on VESPER_METRICS_ADDR's
    port + its index, and those are what `settle` sums."""

    def __init__(self, system: System, log: Path, processes: int = 1) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.metrics = [f"{self.base}/metrics"]
        argv = [system.python, "-m", "vesper.entrypoints.cli", "api"]
        extra: dict[str, str] = {}
        if processes > 1:
            first = free_port(processes)
            self.metrics = [f"http://127.0.0.1:{first + i}/metrics" for i in range(processes)]
            argv += ["--processes", str(processes)]
            extra["VESPER_METRICS_ADDR"] = f"127.0.0.1:{first}"
        env = {
            **os.environ,
            **system.env,
            "VESPER_STORAGE": "sqlite" if system.sqlite else "postgres",
            "VESPER_DATABASE_URL": system.url,
            "VESPER_LOG_FORMAT": "text",
            "API_ADDR": f"127.0.0.1:{self.port}",
            **extra,
        }
        env.pop("API_TOKEN", None)  # the burst sends no bearer token
        self._log = log.open("ab")
        self.popen = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.popen.poll() is not None:
                raise RuntimeError(f"vesper api exited ({self.popen.returncode}); see the log")
            try:
                for url in (f"{self.base}/health", *self.metrics):
                    with urllib.request.urlopen(url, timeout=2) as answer:
                        if answer.status != 200:
                            return False
            except OSError:
                return False
            return True

        wait_for(ready, timeout=READY_TIMEOUT, what="vesper api /health", interval=0.1)

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until the API has answered every request it got: the count of POST /jobs
        in /metrics (summed over the processes) stays the same for 0.25 s (at most
        `timeout` seconds).

        wrk is stopped once it has counted its responses, with a request still in flight
        on each connection; the API answers them after wrk is gone. A burst started at
        once queued behind those (up to 256 requests and 256 closing connections), and
        its first requests took 150-450 ms where the rest took 60-80.
        """
        deadline = time.monotonic() + timeout
        last = -1.0
        while time.monotonic() < deadline:
            count = 0.0
            for url in self.metrics:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    text = answer.read().decode()
                count += sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("vesper_http_requests_total{")
                    and 'method="POST"' in line
                    and 'route="/jobs"' in line
                )
            if count == last:
                return
            last = count
            time.sleep(0.25)

    def cpu_seconds(self) -> float:
        """user + system CPU time so far of the API process and of its children (the
        processes of `--processes N`, alive now)."""
        ticks = 0
        for path in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = path.read_text().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            if path.parent.name == str(self.popen.pid) or fields[1] == str(self.popen.pid):
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._log.close()


def burst(
    base: str,
    *,
    requests: int,
    connections: int,
    threads: int,
    work: Path,
    timeout: float,
    job_type: str = "bench",
) -> dict[str, Any]:
    """`requests` POST /jobs over `connections` connections (wrk, `threads` threads).

    Returns wrk's figures (see http_burst.lua) plus `client_cpu_s`, the CPU time wrk used.
    Bounded: wrk runs at most `timeout` seconds; a thread that has not seen its share of
    responses by then leaves the count short (the caller counts the missing as errors).
    """
    threads = max(1, min(threads, connections))
    per_thread = -(-requests // threads)
    mark = work / f"wrk-mark-{time.monotonic_ns()}"
    marks = [Path(f"{mark}-{i}") for i in range(threads)]
    env = {
        **os.environ,
        "VESPER_BENCH_PER_THREAD": str(per_thread),
        "VESPER_BENCH_MARK": str(mark),
        "VESPER_BENCH_JOB_TYPE": job_type,
    }
    argv = [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(timeout))}s",
        "--timeout",
        "30s",
        "-s",
        str(LUA),
        f"{base}/jobs",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + timeout + 5
        # wrk stops by itself only at -d: interrupt it once every thread is done
        while process.poll() is None and time.monotonic() < deadline:
            if all(path.exists() for path in marks):
                process.send_signal(signal.SIGINT)
                break
            time.sleep(0.005)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for path in marks:
            path.unlink(missing_ok=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"wrk printed no result: {(err or out).strip()[-500:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["client_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def run_once(system: System, config: Any, work: Path, processes: int = 1) -> dict[str, float]:
    """One W5 run against a fresh `vesper api` (`--processes`: W5x2); the figures of the
    measured burst."""
    api = ApiProcess(system, work / f"api-{system.name}.log", processes)
    try:
        api.wait_ready()
        burst(
            api.base,
            requests=config.http_warmup,
            connections=config.http_connections,
            threads=config.http_client_threads,
            work=work,
            timeout=config.http_timeout,
        )
        api.settle()
        cpu_before = api.cpu_seconds()
        result = burst(
            api.base,
            requests=config.http_requests,
            connections=config.http_connections,
            threads=config.http_client_threads,
            work=work,
            timeout=config.http_timeout,
        )
        api_cpu = api.cpu_seconds() - cpu_before
    finally:
        api.stop()
    seconds = result["span_us"] / 1e6
    if result["requests"] <= 0 or seconds <= 0:
        raise RuntimeError(f"no response within {config.http_timeout:.0f}s: {result}")
    missing = max(0, config.http_requests - result["ok"] - result["non_2xx"])
    transport = sum(result[k] for k in ("connect", "read", "write", "timeout"))
    return {
        "jobs_per_s": result["ok"] / seconds,
        "seconds": seconds,
        "p50_ms": result["p50_us"] / 1000,
        "p90_ms": result["p90_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "max_ms": result["max_us"] / 1000,
        # non-2xx responses, transport errors (connect, read, write, timeout), and the
        # requests that got no answer within the bound
        "errors": float(result["non_2xx"] + transport + missing),
        "requests": float(result["ok"] + result["non_2xx"]),
        "api_cpu_pct": 100 * api_cpu / seconds,
        "client_cpu_pct": 100 * result["client_cpu_s"] / seconds,
    }
