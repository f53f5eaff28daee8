"""The uvicorn runner: settings mapping, serving inside a caller's loop without taking
its signals, stopping through should_exit, and what only a real socket shows (R10's
Content-Length cases, chunked uploads)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx

from vesper.entrypoints.container import build_container
from vesper.entrypoints.http import build_server, create_app
from vesper.entrypoints.http.protocol import ConnectionLimits
from vesper.entrypoints.settings import HttpSettings, Settings

MIB = 1024 * 1024


def _settings(**env: str) -> Settings:
    return Settings.from_env({"VESPER_STORAGE": "memory", "API_ADDR": "127.0.0.1:0", **env})


def test_build_server_maps_the_settings() -> None:
    settings = _settings(HTTP_IDLE_TIMEOUT="75s", HTTP_WRITE_TIMEOUT="2.5s")
    server = build_server(create_app(settings=settings), settings.http)
    config = server.config
    assert (config.host, config.port) == ("127.0.0.1", 0)
    assert config.timeout_keep_alive == 75
    assert config.timeout_graceful_shutdown == 3
    assert config.access_log is False
    assert config.log_config is None
    limits = config.http.limits  # type: ignore[union-attr]
    assert limits == ConnectionLimits(max_head_bytes=16384, head_timeout=5.0, max_connections=1024)
    assert build_server(
        create_app(settings=settings), settings.http, access_log=True
    ).config.access_log


def test_zero_idle_timeout_falls_back_to_the_read_timeout() -> None:
    http = HttpSettings(idle_timeout=timedelta(0), read_timeout=timedelta(seconds=7))
    settings = _settings()
    assert build_server(create_app(settings=settings), http).config.timeout_keep_alive == 7


def test_zero_read_header_timeout_falls_back_to_the_read_timeout_as_in_go() -> None:
    app = create_app(settings=_settings())
    http = HttpSettings(read_header_timeout=timedelta(0), read_timeout=timedelta(seconds=7))
    assert build_server(app, http).config.http.limits.head_timeout == 7  # type: ignore[union-attr]
    neither = HttpSettings(read_header_timeout=timedelta(0), read_timeout=timedelta(0))
    assert build_server(app, neither).config.http.limits.head_timeout is None  # type: ignore[union-attr]


@contextlib.asynccontextmanager
async def _serving(**env: str) -> AsyncIterator[int]:
    settings = _settings(**env)
    server = build_server(create_app(settings=settings), settings.http)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def _status_and_body(answer: bytes) -> tuple[bytes, Any]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], json.loads(body)


def test_parser_errors_answer_the_json_error_shape() -> None:
    async def probe() -> list[bytes]:
        async with _serving() as port:
            return [
                await _raw(port, b"GET /he alth HTTP/1.1\r\nHost: x\r\n\r\n"),
                await _raw(
                    port,
                    b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
                ),
                await _raw(port, b"\x16\x03\x01 not HTTP at all\r\n\r\n"),
            ]

    for answer in asyncio.run(probe()):
        status, body = _status_and_body(answer)
        assert status == b"HTTP/1.1 400 Bad Request", answer
        assert set(body) == {"error", "detail"}
        assert body["error"].startswith("malformed HTTP request")


async def _read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)


def test_the_header_timeout_runs_from_the_first_byte_of_a_kept_alive_request() -> None:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"

    async def probe() -> dict[str, Any]:
        results: dict[str, Any] = {}
        async with _serving(HTTP_READ_HEADER_TIMEOUT="500ms") as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            results["first"] = (await reader.readuntil(b'{"status":"ok"}'))[:15]
            # idle between requests longer than the head timeout: HTTP_IDLE_TIMEOUT rules
            await asyncio.sleep(1.2)
            writer.write(request)
            results["second"] = (await reader.readuntil(b'{"status":"ok"}'))[:15]
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the end
            started = time.monotonic()
            results["after_slow_head"] = await _read_until_closed(reader, 5)
            results["closed_after"] = time.monotonic() - started
            writer.close()
        return results

    results = asyncio.run(probe())
    assert results["first"] == results["second"] == b"HTTP/1.1 200 OK"
    assert results["after_slow_head"] == b""  # closed, nothing answered
    assert 0.3 < results["closed_after"] < 1.5


async def _raw(port: int, request: bytes, *, read_timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), read_timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def _serve_and_probe() -> dict[str, Any]:
    settings = _settings()
    container = build_container(settings)
    server = build_server(create_app(container), settings.http)
    handler_before = signal.getsignal(signal.SIGTERM)
    task = asyncio.create_task(server.serve())
    results: dict[str, Any] = {}
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        results["handler_during"] = signal.getsignal(signal.SIGTERM)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base) as client:
            created = await client.post("/jobs", json={"type": "served", "priority": 7})
            results["created"] = created.status_code
            results["fetched"] = (await client.get(f"/jobs/{created.json()['job_id']}")).status_code

            async def chunks() -> AsyncIterator[bytes]:
                yield b'{"type": "a", "payload": {"x": "'
                for _ in range(20 * 16):
                    yield b"x" * 65536
                yield b'"}}'

            chunked = await client.post(
                "/jobs", content=chunks(), headers={"Content-Type": "application/json"}
            )
            results["chunked"] = (chunked.status_code, chunked.json())

        started = time.monotonic()
        announced = await _raw(
            port,
            b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 104857600\r\n\r\n" + b" " * 1024,
        )
        results["announced"] = (announced.split(b"\r\n", 1)[0], time.monotonic() - started)
        lying = await _raw(
            port,
            b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10\r\n\r\n" + b"x" * (2 * MIB),
        )
        results["lying"] = lying.split(b"\r\n", 1)[0]
        results["rows"] = container.get_stats()().total
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        container.shutdown_resources()
    results["handler_before"] = handler_before
    results["handler_after"] = signal.getsignal(signal.SIGTERM)
    return results


def test_server_runs_in_the_callers_loop_and_stops_on_should_exit() -> None:
    results = asyncio.run(_serve_and_probe())
    assert (results["created"], results["fetched"]) == (201, 200)
    # uvicorn left the caller's signal handlers alone, during and after.
    assert results["handler_during"] is results["handler_before"]
    assert results["handler_after"] is results["handler_before"]
    status, body = results["chunked"]
    assert status == 413
    assert set(body) == {"error", "detail"}
    status_line, seconds = results["announced"]
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large"
    assert seconds < 1.0
    # The first 10 bytes are a (bad) body; the rest is not a request: never a 5xx.
    assert results["lying"].startswith(b"HTTP/1.1 4")
    assert results["rows"] == 1


def test_port_is_released_after_stop() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = _settings(API_ADDR=f"127.0.0.1:{port}")

    async def start_and_stop() -> None:
        server = build_server(create_app(settings=settings), settings.http)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        server.should_exit = True
        await asyncio.wait_for(task, 10)

    asyncio.run(start_and_stop())
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


def test_head_on_the_probes_answers_as_get_without_a_body() -> None:
    async def probe() -> list[bytes]:
        async with _serving(VESPER_API_TOKEN="s3cret") as port:  # the probes stay public
            return [
                await _raw(
                    port, b"HEAD " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
                for path in (b"/health", b"/ready")
            ]

    for answer in asyncio.run(probe()):
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK"), answer
        assert b"content-length: 15" in head  # the GET's body, {"status":"ok"}
        assert body == b""


def test_a_repeated_idempotency_key_header_is_400() -> None:
    # separate header lines, as only a real socket carries them (the test client merges)
    def submit(*keys: bytes) -> bytes:
        lines = b"".join(b"Idempotency-Key: " + key + b"\r\n" for key in keys)
        return (
            b"POST /jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: 12\r\n"
            + lines
            + b'\r\n{"type":"a"}'
        )

    async def probe() -> list[bytes]:
        async with _serving() as port:
            return [
                await _raw(port, submit(b"k1", b"k2")),
                await _raw(port, submit(b"same", b"same")),
                await _raw(port, submit(b"once")),
            ]

    twice, same_twice, once = asyncio.run(probe())
    for answer in (twice, same_twice):
        status, body = _status_and_body(answer)
        assert status == b"HTTP/1.1 400 Bad Request", answer
        assert body["detail"]["field"] == "Idempotency-Key"
    assert once.startswith(b"HTTP/1.1 201 ")
