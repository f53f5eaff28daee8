"""HTTP producers for the rows: every response goes to the lab's response log.

`burst` sends N submissions with distinct Idempotency-Keys, `in_flight` at a time, and
retries 429/503 (and connection errors) with the same key until a 2xx. `Steady` sends
at a fixed rate from a thread until stopped, with the same retry rule.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

RETRYABLE = frozenset({429, 503})


def _log(
    responses: list[dict[str, Any]],
    key: str | None,
    response: httpx.Response | None,
    started: float,
    error: str = "",
) -> None:
    # the request's latency ends now: decoding bodies is the client's own CPU, and on 2
    # cores a GET of 500 jobs parsed here (R14) delayed every other response's reading
    ended = time.monotonic()
    body = response.content[:2000].decode(errors="replace") if response is not None else ""
    job_id = None
    if response is not None and key is not None and 200 <= response.status_code < 300:
        try:
            job_id = response.json().get("job_id")
        except ValueError:
            job_id = None
    responses.append(
        {
            "status": response.status_code if response is not None else 0,
            "key": key,
            "job_id": job_id,
            "body": body[:2000],
            "latency": ended - started,
            "mono": time.monotonic_ns(),
            "error": error,
            "retry_after": response.headers.get("Retry-After") if response is not None else None,
        }
    )


def burst(
    url: str,
    responses: list[dict[str, Any]],
    *,
    total: int,
    in_flight: int,
    body: Callable[[int], dict[str, Any]],
    timeout: float = 30.0,
    give_up_after: float = 120.0,
) -> None:
    asyncio.run(_burst(url, responses, total, in_flight, body, timeout, give_up_after))


async def _burst(
    url: str,
    responses: list[dict[str, Any]],
    total: int,
    in_flight: int,
    body: Callable[[int], dict[str, Any]],
    timeout: float,
    give_up_after: float,
) -> None:
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    semaphore = asyncio.Semaphore(in_flight)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:

        async def one(i: int) -> None:
            key = f"burst-{i}-{uuid.uuid4().hex[:8]}"
            deadline = time.monotonic() + give_up_after
            while time.monotonic() < deadline:
                async with semaphore:
                    started = time.monotonic()  # latency of the request, not of the queue
                    try:
                        response = await client.post(
                            "/jobs", json=body(i), headers={"Idempotency-Key": key}
                        )
                    except httpx.HTTPError as exc:
                        _log(responses, key, None, started, type(exc).__name__)
                        await asyncio.sleep(0.2)
                        continue
                _log(responses, key, response, started)
                if response.status_code not in RETRYABLE:
                    return
                await asyncio.sleep(min(float(response.headers.get("Retry-After", "1")), 1.0))

        await asyncio.gather(*(one(i) for i in range(total)))


class Steady:
    """Submit `rate` jobs per second from a thread; retry 429/503/errors with the key."""

    def __init__(
        self, url: str, responses: list[dict[str, Any]], *, rate: float, body: dict[str, Any]
    ) -> None:
        self.url = url
        self.responses = responses
        self.rate = rate
        self.body = body
        self.keys: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Steady:
        self._thread.start()
        return self

    def stop(self, drain: float = 60.0) -> None:
        """Stop sending new keys; keys already sent are retried until acked (bounded)."""
        self._stop.set()
        self._thread.join(timeout=drain + 15)

    def _run(self) -> None:
        pending: list[str] = []
        with httpx.Client(base_url=self.url, timeout=15.0) as client:
            next_at = time.monotonic()
            drain_until: float | None = None
            while True:
                if self._stop.is_set():
                    drain_until = drain_until or time.monotonic() + 60.0
                    if not pending or time.monotonic() > drain_until:
                        return
                elif time.monotonic() >= next_at:
                    key = f"steady-{uuid.uuid4().hex}"
                    self.keys.append(key)
                    pending.append(key)
                    next_at += 1.0 / self.rate
                if not pending:
                    time.sleep(max(0.0, min(next_at - time.monotonic(), 0.05)))
                    continue
                key = pending[0]
                started = time.monotonic()
                try:
                    response = client.post(
                        "/jobs", json=self.body, headers={"Idempotency-Key": key}
                    )
                except httpx.HTTPError as exc:
                    _log(self.responses, key, None, started, type(exc).__name__)
                    time.sleep(0.2)
                    continue
                _log(self.responses, key, response, started)
                if response.status_code in RETRYABLE:
                    time.sleep(0.2)
                    continue
                pending.pop(0)


class ReadyProbe:
    """Polls /ready every `interval` from a thread, recording (mono, status)."""

    def __init__(self, url: str, interval: float = 0.1) -> None:
        self.url = url
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ReadyProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=6.0) as client:
            while not self._stop.is_set():
                try:
                    status = client.get("/ready").status_code
                except httpx.HTTPError:
                    status = 0
                self.samples.append((time.monotonic(), status))
                self._stop.wait(self.interval)
