"""Store failures and unexpected errors (docs/reliability.md, S2, R5, R6): 503 with Retry-After
while the store does not answer, a generic 500 otherwise, nothing leaked, /health up,
and the read and write timeouts.

The repository is replaced through the container (`job_repository.override`) by a
stand-in that raises: a stub of the port, not a database mock."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import anyio
import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import exc as sa_exc

from vesper.application.store_gate import StoreGate
from vesper.domain.errors import SchemaNotMigrated, StoreUnavailable
from vesper.entrypoints.container import Container, build_container
from vesper.entrypoints.http import create_app, deps
from vesper.entrypoints.http.timeouts import BodyTimeout, TimeoutMiddleware
from vesper.entrypoints.settings import Settings

SECRET_BITS = ("db.internal", "10.0.0.7", "hunter2", "postgresql://", "SELECT", "INSERT")
FORBIDDEN = ("Traceback", 'File "', "sqlalchemy", "psycopg", "/src/", *SECRET_BITS)
DRIVER_MESSAGE = (
    'connection to server at "db.internal" (10.0.0.7), port 5432 failed: '
    "password authentication failed for postgresql://vesper:hunter2@db.internal/vesper"
)
JOB = "5f0c4a4e-8a4b-4c5e-9d3e-2a1b0c9d8e7f"  # fixed: test ids stay stable
STORE_ROUTES = [
    ("POST", "/jobs", {"type": "a"}),
    ("POST", "/jobs/batch", {"jobs": [{"type": "a"}]}),
    ("GET", f"/jobs/{JOB}", None),
    ("GET", "/jobs", None),
    ("POST", f"/jobs/{JOB}/cancel", None),
    ("POST", f"/jobs/{JOB}/retry", None),
    ("GET", "/stats", None),
    ("GET", "/ready", None),
]


class BrokenRepository:
    """A job repository whose every store call raises `error` (after `delay`)."""

    def __init__(self, real: Any, error: BaseException | None, delay: float = 0.0) -> None:
        self._real = real
        self._error = error
        self._delay = delay

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._real, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._delay:
                time.sleep(self._delay)
            if self._error is not None:
                raise self._error
            return attribute(*args, **kwargs)

        return call


def _sql_error() -> Exception:
    return sa_exc.OperationalError(
        "SELECT * FROM jobs WHERE id = %(id)s", {"id": 1}, Exception(DRIVER_MESSAGE)
    )


# The ports' error contract: a store says "not answering" with these and nothing else.
STORE_ERRORS = {
    "store unavailable": lambda: StoreUnavailable(DRIVER_MESSAGE),
    "schema not migrated": SchemaNotMigrated,
}


@pytest.fixture
def container() -> Iterator[Container]:
    c = build_container({"VESPER_STORAGE": "memory"})
    yield c
    c.job_repository.reset_override()
    c.shutdown_resources()


@pytest.fixture
def client(container: Container) -> Iterator[TestClient[Litestar]]:
    with TestClient(create_app(container)) as test_client:
        yield test_client


def _break(container: Container, error: BaseException | None, delay: float = 0.0) -> None:
    container.job_repository.override(BrokenRepository(container.job_repository(), error, delay))


def _no_leak(text: str) -> None:
    leaked = [word for word in FORBIDDEN if word in text]
    assert not leaked, (leaked, text)


@pytest.mark.parametrize("error", list(STORE_ERRORS))
@pytest.mark.parametrize(("method", "path", "body"), STORE_ROUTES, ids=[r[1] for r in STORE_ROUTES])
def test_store_failures_are_503_with_retry_after(
    client: TestClient[Litestar],
    container: Container,
    caplog: pytest.LogCaptureFixture,
    error: str,
    method: str,
    path: str,
    body: Any,
) -> None:
    _break(container, STORE_ERRORS[error]())
    response = client.request(method, path, json=body)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert set(response.json()) == {"error", "detail"}
    _no_leak(response.text)
    _no_leak(caplog.text)


def test_health_stays_up_while_the_store_is_down(
    client: TestClient[Litestar], container: Container
) -> None:
    _break(container, StoreUnavailable("down"))
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 503
    container.job_repository.reset_override()
    assert client.get("/ready").status_code == 200


def test_ready_is_503_when_the_store_cannot_even_open(client: TestClient[Litestar]) -> None:
    settings = Settings.from_env(
        {"VESPER_STORAGE": "sqlite", "VESPER_DATABASE_URL": "sqlite:////nonexistent/dir/q.db"}
    )
    broken = build_container(settings)
    with TestClient(create_app(broken)) as other:
        assert other.get("/health").status_code == 200
        response = other.get("/ready")
        assert response.status_code == 503
        _no_leak(response.text)


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("boom in /src/vesper/x.py while running SELECT 1"),
        sa_exc.IntegrityError("INSERT INTO jobs", {}, Exception("duplicate key value")),
        sa_exc.DBAPIError("SELECT 1", {}, Exception(DRIVER_MESSAGE), connection_invalidated=False),
        # a driver's "not answering" that a store let out: the store broke the contract
        _sql_error(),
        sa_exc.DBAPIError("INSERT", {}, Exception(DRIVER_MESSAGE), connection_invalidated=True),
        psycopg.OperationalError(DRIVER_MESSAGE),
        RecursionError("maximum recursion depth exceeded"),
    ],
    ids=["runtime", "integrity", "dbapi", "operational", "invalidated", "psycopg", "recursion"],
)
def test_unexpected_errors_are_a_generic_500_logged_with_traceback(
    client: TestClient[Litestar],
    container: Container,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:
    _break(container, error)
    response = client.post("/jobs", json={"type": "a"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error", "detail": None}
    _no_leak(response.text)
    assert "duplicate key" not in response.text
    records = [r for r in caplog.records if r.name == "vesper.http" and r.exc_info]
    assert records
    assert records[0].exc_info is not None
    assert records[0].exc_info[1] is error


def test_debug_is_off(client: TestClient[Litestar]) -> None:
    assert client.app.debug is False


def test_write_timeout_answers_503_instead_of_hanging() -> None:
    settings = Settings.from_env({"VESPER_STORAGE": "memory", "HTTP_WRITE_TIMEOUT": "300ms"})
    container = build_container(settings)
    released = threading.Event()

    class Hanging:
        def __getattr__(self, name: str) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                released.wait(10)
                raise StoreUnavailable("gave up")

            return call

    container.job_repository.override(Hanging())
    try:
        with TestClient(create_app(container)) as client:
            started = time.monotonic()
            response = client.get(f"/jobs/{uuid4()}")
            elapsed = time.monotonic() - started
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert elapsed < 2.0
            assert client.get("/health").status_code == 200  # the loop is free
    finally:
        released.set()
        container.job_repository.reset_override()


def test_read_timeout_is_408_for_a_body_that_stops_arriving() -> None:
    received: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            received.append(message.get("body", b""))
            if not message.get("more_body"):
                return

    async def trickle() -> dict[str, Any]:
        if not received:
            return {"type": "http.request", "body": b"{", "more_body": True}
        await anyio.sleep(5)
        return {"type": "http.request", "body": b"}", "more_body": False}

    async def send(message: Any) -> None:
        raise AssertionError("nothing is sent by this app")

    middleware = TimeoutMiddleware(app, read_timeout=timedelta(milliseconds=200))

    async def run() -> None:
        with pytest.raises(BodyTimeout):
            await middleware({"type": "http"}, trickle, send)

    started = time.monotonic()
    anyio.run(run)
    assert time.monotonic() - started < 2.0
    assert received == [b"{"]


def test_store_errors_do_not_log_driver_messages(
    client: TestClient[Litestar], container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _break(container, StoreUnavailable(DRIVER_MESSAGE))
    client.get("/stats")
    assert "StoreUnavailable" in caplog.text
    _no_leak(caplog.text)


def test_unreachable_database_gives_503_fast_and_health_stays_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = "postgresql+psycopg://vesper:hunter2@127.0.0.1:1/vesper"  # nothing listens on :1
    container = build_container({"VESPER_STORAGE": "postgres", "VESPER_DATABASE_URL": url})
    with TestClient(create_app(container)) as client:
        assert client.get("/health").status_code == 200
        for method, path, body in STORE_ROUTES:
            started = time.monotonic()
            response = client.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
            assert time.monotonic() - started < 2.0
            assert response.headers["retry-after"] == "1"
            _no_leak(response.text)
        assert client.get("/health").status_code == 200
    assert "hunter2" not in caplog.text
    assert "127.0.0.1:1" not in caplog.text


def test_client_disconnecting_mid_body_is_not_logged_as_an_error(
    container: Container, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(container)
    messages = iter(
        [
            {"type": "http.request", "body": b'{"type": ', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/jobs",
        "raw_path": b"/jobs",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    anyio.run(app, scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert container.get_stats()().total == 0


def test_a_request_waits_for_a_store_slot_no_longer_than_the_pool_timeout(
    tmp_path: Path,
) -> None:
    """R14 in small: with every connection busy, the next request gets 503 with
    Retry-After once the pool timeout has passed, not after queueing for a thread too;
    and once the slot frees, requests are served again."""
    container = build_container(
        {
            "VESPER_STORAGE": "sqlite",
            "VESPER_DATABASE_URL": f"sqlite:///{tmp_path / 'q.db'}",
            "VESPER_DB_POOL_SIZE": "1",
            "VESPER_DB_MAX_OVERFLOW": "0",
        }
    )
    container.config.store_wait.from_value(0.3)  # the gate's wait, 10 s in production
    real = container.job_repository()
    try:
        with TestClient(create_app(container)) as client:
            _break(container, None, delay=2.0)  # every store call takes 2 s
            slow: dict[str, Any] = {}
            holder = threading.Thread(target=lambda: slow.update(r=client.get("/stats")))
            holder.start()
            time.sleep(0.5)  # the slow call holds the one slot
            started = time.monotonic()
            response = client.get("/jobs")
            waited = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            assert response.json()["detail"] == {"retry_after": 1}
            assert waited < 1.5, f"waited {waited:.2f}s for a slot; the bound is 0.3s"
            holder.join(timeout=10)
            assert slow["r"].status_code == 200
            container.job_repository.override(real)
            assert client.get("/jobs").status_code == 200
    finally:
        container.job_repository.reset_override()
        container.shutdown_resources()


def test_a_call_out_of_time_is_served_by_a_free_slot_and_never_waits_for_one() -> None:
    gate = StoreGate(1, wait=30)
    ran: list[str] = []
    long_ago = time.monotonic() - 60  # its request has waited past the gate's 30 s

    async def scenario() -> Any:
        served = await gate.run(lambda: ran.append("free slot") or "ok", deadline=long_ago + 30)
        release = threading.Event()
        holder = asyncio.ensure_future(gate.run(lambda: release.wait(10)))  # takes the slot
        await asyncio.sleep(0.05)
        try:
            with anyio.fail_after(5):  # a waiting gate would hang here for its 30 s
                await gate.run(lambda: ran.append("busy slot"), deadline=long_ago + 30)
        except StoreUnavailable as exc:
            refused: Any = exc
        else:
            refused = None
        release.set()
        await holder
        return served, refused

    served, refused = asyncio.run(scenario())
    assert served == "ok"
    assert isinstance(refused, StoreUnavailable)
    assert ran == ["free slot"]


def test_store_slots_are_the_pool_size_plus_overflow(tmp_path: Path) -> None:
    container = build_container(
        {
            "VESPER_DATABASE_URL": f"sqlite:///{tmp_path / 'q.db'}",
            "VESPER_DB_POOL_SIZE": "3",
            "VESPER_DB_MAX_OVERFLOW": "2",
        }
    )
    app = create_app(container)
    calls = app.dependencies["store_calls"].dependency()
    assert isinstance(calls, deps.StoreCalls)
    container.store()  # the store reports its capacity when it opens
    assert calls.gate.capacity == 5
    container.shutdown_resources()
    with pytest.raises(ValueError, match="at least one slot"):
        StoreGate(0)
