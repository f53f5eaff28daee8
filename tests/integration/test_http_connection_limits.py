"""A real `vesper serve` against what a single client can do to its connections: a huge
request head, a thousand idle sockets, more connections than allowed, and a low open
files limit."""

from __future__ import annotations

import contextlib
import json
import resource
import select
import socket
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.integration.harness import wait_until
from tests.integration.service import Service

pytestmark = pytest.mark.slow

MEMORY = {"VESPER_STORAGE": "memory"}
MIB = 1024 * 1024
CLOSE_HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


@contextmanager
def serving(tmp_path: Path, env: dict[str, str]) -> Iterator[Service]:
    service = Service({**MEMORY, **env}, tmp_path / "serve.log")
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()


def _exchange(port: int, request: bytes) -> tuple[int, bytes, bytes]:
    """Send `request` (as far as the server reads it) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # the server may answer and close before reading it all
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        answer = b""
        while chunk := _recv(sock):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _get(name: str, size: int) -> bytes:
    return (
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + name.encode()
        + b": "
        + b"a" * size
        + b"\r\n\r\n"
    )


def test_a_head_above_the_limit_gets_431_json_without_growing_the_process(
    tmp_path: Path,
) -> None:
    with serving(tmp_path, {"VESPER_MAX_HEADER_BYTES": "32KiB"}) as service:
        status, _, _ = _exchange(service.port, _get("X-Within", 20 * 1024))
        assert status == 200  # above the default 16 KiB: the limit is configurable
        before = _rss_kib(service.popen.pid)
        for _ in range(3):
            status, head, body = _exchange(service.port, _get("X-Huge", MIB))
            assert status == 431
            assert b"content-type: application/json" in head.lower()
            answer = json.loads(body)
            assert set(answer) == {"error", "detail"}
            assert answer["detail"] == {"max_bytes": 32 * 1024}
        grown_kib = _rss_kib(service.popen.pid) - before
        assert grown_kib < 4 * 1024, f"RSS grew by {grown_kib} KiB"
        assert service.get("/health").status_code == 200


def _raise_own_open_files_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"the open files limit ({hard}) is below {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _closed_by_peer(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable) and _recv(sock) == b""


def test_idle_connections_leave_health_fast_and_are_closed_after_the_header_timeout(
    tmp_path: Path,
) -> None:
    _raise_own_open_files_limit(1500)
    with serving(tmp_path, {"HTTP_READ_HEADER_TIMEOUT": "1s"}) as service, ExitStack() as stack:
        idle = [
            stack.enter_context(socket.create_connection(("127.0.0.1", service.port)))
            for _ in range(1000)
        ]
        half_open = stack.enter_context(socket.create_connection(("127.0.0.1", service.port)))
        half_open.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
        timings = []
        for _ in range(5):
            started = time.monotonic()
            assert service.get("/health").status_code == 200
            timings.append(time.monotonic() - started)
        assert statistics.median(timings) < 0.1, timings
        open_ = [*idle, half_open]

        def all_closed() -> bool:
            open_[:] = [sock for sock in open_ if not _closed_by_peer(sock)]
            return not open_

        wait_until(all_closed, timeout=5, what="the server to close the idle connections")
        assert service.get("/health").status_code == 200


def test_connections_past_the_limit_get_503_and_a_log_line(tmp_path: Path) -> None:
    with serving(tmp_path, {"VESPER_MAX_CONNECTIONS": "20"}) as service, ExitStack() as stack:
        for _ in range(20):
            stack.enter_context(socket.create_connection(("127.0.0.1", service.port)))
        time.sleep(0.2)  # the server has accepted them all
        status, _, body = _exchange(service.port, CLOSE_HEALTH)
        assert status == 503
        assert json.loads(body)["detail"] == {"max_connections": 20}
        wait_until(
            lambda: "VESPER_MAX_CONNECTIONS" in service.output(), timeout=5, what="the log line"
        )
        stack.close()  # the idle ones go: connections are accepted again
        wait_until(
            lambda: _exchange(service.port, CLOSE_HEALTH)[0] == 200,
            timeout=5,
            what="/health after the idle connections closed",
        )


def _open_files_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no Max open files line")


def test_serve_raises_its_soft_open_files_limit_to_the_hard_one(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"the hard open files limit ({hard}) is unlimited or too low to test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # the child inherits it
    try:
        service = Service(MEMORY, tmp_path / "serve.log")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        service.wait_ready()
        assert _open_files_limits(service.popen.pid) == (hard, hard)
    finally:
        service.stop()
