"""Bad input over every POST route (docs/reliability.md, R10, R11, S3): each is refused with a
4xx in the error shape that names the field, nothing is created, no 5xx, and nothing
of the implementation leaks into a body."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from vesper.entrypoints.container import Container, build_container
from vesper.entrypoints.http import create_app

MIB = 1024 * 1024
FORBIDDEN = (
    "Traceback",
    'File "',
    "sqlalchemy",
    "psycopg",
    "SELECT",
    "INSERT",
    "/src/",
    "postgresql://",
)
JSON = "application/json"

# (name, body, content type, the field the error must name or None)
CORPUS: list[tuple[str, bytes, str | None, str | None]] = [
    ("truncated", b'{"type": "a", "priority": 3', JSON, "body"),
    ("trailing garbage", b'{"type": "a"} xyz', JSON, "body"),
    ("two documents", b'{"type": "a"}{"type": "b"}', JSON, "body"),
    ("invalid utf-8", b'{"type": "\xff\xfe"}', JSON, "body"),
    ("lone surrogate", b'{"type": "\\ud800"}', JSON, "body"),
    ("bom", b'\xef\xbb\xbf{"type": "a"}', JSON, "body"),
    ("NaN", b'{"type": "a", "payload": {"x": NaN}}', JSON, "body"),
    ("Infinity", b'{"type": "a", "payload": {"x": Infinity}}', JSON, "body"),
    ("-Infinity", b'{"type": "a", "payload": {"x": -Infinity}}', JSON, "body"),
    ("number overflow", b'{"type": "a", "payload": {"x": 1e400}}', JSON, "payload"),
    ("duplicate keys", b'{"type": "a", "type": "b"}', JSON, "body"),
    ("duplicate payload keys", b'{"type": "a", "payload": {"k": 1, "k": 2}}', JSON, "body"),
    ("text/plain", b'{"type": "a"}', "text/plain", "Content-Type"),
    ("form encoded", b"type=a&priority=3", "application/x-www-form-urlencoded", "Content-Type"),
    ("empty body", b"", JSON, "body"),
    ("blank body", b"   ", JSON, "body"),
    ("null", b"null", JSON, "body"),
    ("array root", b'[{"type": "a"}]', JSON, "body"),
    ("string root", b'"a"', JSON, "body"),
    ("number root", b"42", JSON, "body"),
    ("payload array", b'{"type": "a", "payload": []}', JSON, "payload"),
    ("payload string", b'{"type": "a", "payload": "x"}', JSON, "payload"),
    ("payload null", b'{"type": "a", "payload": null}', JSON, "payload"),
    ("priority -1", b'{"type": "a", "priority": -1}', JSON, "priority"),
    ("priority 11", b'{"type": "a", "priority": 11}', JSON, "priority"),
    ("priority string", b'{"type": "a", "priority": "5"}', JSON, "priority"),
    ("priority float", b'{"type": "a", "priority": 5.5}', JSON, "priority"),
    ("priority true", b'{"type": "a", "priority": true}', JSON, "priority"),
    ("priority null", b'{"type": "a", "priority": null}', JSON, "priority"),
    ("type empty", b'{"type": ""}', JSON, "type"),
    ("type 201 chars", b'{"type": "' + b"t" * 201 + b'"}', JSON, "type"),
    ("type number", b'{"type": 7}', JSON, "type"),
    ("type null", b'{"type": null}', JSON, "type"),
    ("type missing", b'{"priority": 1}', JSON, "type"),
    ("type newline", b'{"type": "a\\nb"}', JSON, "type"),
    ("type DEL", b'{"type": "a\\u007fb"}', JSON, "type"),
    ("type blank", b'{"type": "   "}', JSON, "type"),
    ("run_at words", b'{"type": "a", "run_at": "tomorrow"}', JSON, "run_at"),
    ("run_at month 13", b'{"type": "a", "run_at": "2024-13-01T00:00:00Z"}', JSON, "run_at"),
    ("run_at no offset", b'{"type": "a", "run_at": "2024-01-01T00:00:00"}', JSON, "run_at"),
    ("run_at number", b'{"type": "a", "run_at": 1700000000}', JSON, "run_at"),
    (
        "run_at before year 1 in UTC",
        b'{"type": "a", "run_at": "0001-01-01T00:00:00+01:00"}',
        JSON,
        "run_at",
    ),
    ("run_at year 1", b'{"type": "a", "run_at": "0001-01-01T00:00:00Z"}', JSON, "run_at"),
    ("run_at 1999", b'{"type": "a", "run_at": "1999-12-30T23:59:59Z"}', JSON, "run_at"),
    (
        "run_at and delay",
        b'{"type": "a", "run_at": "2030-01-01T00:00:00Z", "delay_seconds": 5}',
        JSON,
        "run_at",
    ),
    ("delay -1", b'{"type": "a", "delay_seconds": -1}', JSON, "delay_seconds"),
    ("delay string", b'{"type": "a", "delay_seconds": "5"}', JSON, "delay_seconds"),
    ("delay huge", b'{"type": "a", "delay_seconds": 1e300}', JSON, "delay_seconds"),
    ("max_retries -1", b'{"type": "a", "max_retries": -1}', JSON, "max_retries"),
    ("max_retries 1e9", b'{"type": "a", "max_retries": 1000000000}', JSON, "max_retries"),
    ("max_retries float", b'{"type": "a", "max_retries": 1.5}', JSON, "max_retries"),
    ("timeout 0", b'{"type": "a", "timeout_seconds": 0}', JSON, "timeout_seconds"),
    ("timeout -1", b'{"type": "a", "timeout_seconds": -1}', JSON, "timeout_seconds"),
    ("unknown field", b'{"type": "a", "priorty": 3}', JSON, "priorty"),
    (
        "nested too deep",
        b'{"type": "a", "payload": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
        JSON,
        "body",
    ),
]
# A bare job body is a JSON object whose first key is "type" or a typo of one.
_ITEM_LEVEL = {name for name, body, ctype, _ in CORPUS if body.startswith(b'{"') and ctype == JSON}


@pytest.fixture
def container() -> Iterator[Container]:
    c = build_container({"VESPER_STORAGE": "memory"})
    yield c
    c.shutdown_resources()


@pytest.fixture
def client(container: Container) -> Iterator[TestClient[Litestar]]:
    with TestClient(create_app(container)) as test_client:
        yield test_client


def _rows(container: Container) -> int:
    return container.get_stats()().total


def _check_refused(response: Any, statuses: tuple[int, ...] = (400, 413, 415, 422)) -> Any:
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    leaked = [word for word in FORBIDDEN if word in response.text]
    assert not leaked, (leaked, response.text)
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert isinstance(body["error"], str)
    return body


def _post(client: TestClient[Litestar], path: str, body: bytes, ctype: str | None) -> Any:
    headers = {"Content-Type": ctype} if ctype else {}
    return client.post(path, content=body, headers=headers)


@pytest.mark.parametrize(("name", "body", "ctype", "field"), CORPUS, ids=[c[0] for c in CORPUS])
def test_post_jobs_refuses_bad_body_naming_the_field(
    client: TestClient[Litestar],
    container: Container,
    name: str,
    body: bytes,
    ctype: str | None,
    field: str | None,
) -> None:
    refused = _check_refused(_post(client, "/jobs", body, ctype))
    assert refused["detail"]["field"] == field, refused
    assert _rows(container) == 0


@pytest.mark.parametrize(("name", "body", "ctype", "field"), CORPUS, ids=[c[0] for c in CORPUS])
def test_post_batch_refuses_bad_body_and_bad_item(
    client: TestClient[Litestar],
    container: Container,
    name: str,
    body: bytes,
    ctype: str | None,
    field: str | None,
) -> None:
    _check_refused(_post(client, "/jobs/batch", body, ctype))
    if name in _ITEM_LEVEL:
        wrapped = b'{"jobs": [{"type": "fine"}, ' + body + b"]}"
        refused = _check_refused(_post(client, "/jobs/batch", wrapped, JSON))
        if field != "body":
            assert refused["detail"]["field"] == f"jobs[1].{field}", refused
    assert _rows(container) == 0


def test_duplicate_keys_in_a_large_body_are_refused(
    client: TestClient[Litestar], container: Container
) -> None:
    # Large bodies are checked off the event loop; the answer is the same.
    blob = b'"' + b"x" * (64 * 1024) + b'"'
    body = b'{"type": "a", "payload": {"k": ' + blob + b', "k": 2}}'
    refused = _check_refused(_post(client, "/jobs", body, JSON), (400,))
    assert refused["detail"]["field"] == "body"
    batch = b'{"jobs": [{"type": "a", "payload": {"b": ' + blob + b"}}], " + b'"jobs": []}'
    _check_refused(_post(client, "/jobs/batch", batch, JSON), (400,))
    assert _rows(container) == 0


def test_integral_floats_count_as_integers_outside_the_payload(
    client: TestClient[Litestar],
) -> None:
    # JSON Schema calls 5.0 an integer; the payload is kept exactly as sent.
    body = b'{"type": "a", "priority": 5.0, "max_retries": 2.0, "payload": {"x": 1.0}}'
    job = client.post("/jobs", content=body, headers={"Content-Type": JSON}).json()
    assert (job["priority"], job["max_retries"], job["payload"]) == (5, 2, {"x": 1.0})
    assert isinstance(job["payload"]["x"], float)
    batch = b'{"jobs": [{"type": "a", "priority": 1e1}, {"type": "b", "priority": 3.5}]}'
    refused = _check_refused(_post(client, "/jobs/batch", batch, JSON), (400,))
    assert refused["detail"]["field"] == "jobs[1].priority"
    batch = b'{"jobs": [{"type": "a", "priority": 1e1}]}'
    assert _post(client, "/jobs/batch", batch, JSON).json()["jobs"][0]["priority"] == 10


@pytest.mark.parametrize(
    "body",
    [b'{"jobs": "x"}', b'{"jobs": [1]}', b'{"jobs": null}', b"{}", b'{"jobs": [], "x": 1}'],
)
def test_batch_shape_errors_are_400(
    client: TestClient[Litestar], container: Container, body: bytes
) -> None:
    refused = _check_refused(_post(client, "/jobs/batch", body, JSON), (400,))
    assert refused["detail"]["field"].startswith(("jobs", "x")), refused
    assert _rows(container) == 0


@pytest.mark.parametrize(("name", "body", "ctype", "field"), CORPUS, ids=[c[0] for c in CORPUS])
def test_bodies_sent_to_cancel_and_retry_do_no_harm(
    client: TestClient[Litestar],
    container: Container,
    name: str,
    body: bytes,
    ctype: str | None,
    field: str | None,
) -> None:
    for action in ("cancel", "retry"):
        response = _post(client, f"/jobs/{uuid4()}/{action}", body, ctype)
        assert response.status_code == 404, response.text  # the body is not read
        _check_refused(response, (404,))
    assert _rows(container) == 0


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (b"", 400),
        (b"k" * 256, 400),
        (b"k" * 1000, 400),
        ("ключ".encode(), 400),
        (b"tab\there", 400),
        (b"\x01control", 400),
        (b"k" * 255, 201),
        (b"printable ~!@#$%^&*()", 201),
    ],
)
def test_idempotency_key_hygiene(
    client: TestClient[Litestar], container: Container, key: bytes, expected: int
) -> None:
    response = client.post("/jobs", json={"type": "a"}, headers={"Idempotency-Key": key})
    assert response.status_code == expected, response.text
    if expected == 400:
        assert _check_refused(response)["detail"]["field"] == "Idempotency-Key"
        assert _rows(container) == 0


# --- R10: sizes -------------------------------------------------------------------


def test_payload_just_under_the_body_limit_is_accepted(
    client: TestClient[Litestar], container: Container
) -> None:
    body = b'{"type": "big", "payload": {"blob": "' + b"x" * (MIB - 1024) + b'"}}'
    assert len(body) < MIB
    assert client.post("/jobs", content=body, headers={"Content-Type": JSON}).status_code == 201
    assert _rows(container) == 1


def test_body_one_byte_over_the_limit_is_413(
    client: TestClient[Litestar], container: Container
) -> None:
    prefix, suffix = b'{"type": "big", "payload": {"blob": "', b'"}}'
    body = prefix + b"x" * (MIB + 1 - len(prefix) - len(suffix)) + suffix
    assert len(body) == MIB + 1
    refused = _check_refused(client.post("/jobs", content=body, headers={"Content-Type": JSON}))
    assert refused["detail"] == {"max_bytes": MIB}
    assert _rows(container) == 0


def test_large_body_with_content_length_is_refused_at_once(
    client: TestClient[Litestar], container: Container
) -> None:
    body = b" " * (20 * MIB)
    started = time.monotonic()
    response = client.post("/jobs", content=body, headers={"Content-Type": JSON})
    assert response.status_code == 413
    _check_refused(response)
    assert time.monotonic() - started < 1.0
    assert _rows(container) == 0


def test_large_chunked_body_is_413(client: TestClient[Litestar], container: Container) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"type": "a", "payload": {"x": "'
        for _ in range(20 * 16):
            yield b"x" * 65536
        yield b'"}}'

    response = client.post("/jobs", content=chunks(), headers={"Content-Type": JSON})
    assert "content-length" not in {k.lower() for k in response.request.headers}
    _check_refused(response, (413,))
    response = client.post("/jobs/batch", content=chunks(), headers={"Content-Type": JSON})
    _check_refused(response, (413,))
    assert _rows(container) == 0


def test_nesting_100000_levels_is_400(client: TestClient[Litestar], container: Container) -> None:
    depth = 100_000
    for nested in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        body = b'{"type": "a", "payload": {"x": ' + nested + b"}}"
        assert len(body) < MIB
        refused = _check_refused(_post(client, "/jobs", body, JSON), (400,))
        assert refused["detail"]["field"] == "body"
        wrapped = b'{"jobs": [{"type": "a", "payload": {"x": ' + nested + b"}}]}"
        _check_refused(_post(client, "/jobs/batch", wrapped, JSON), (400,))
    assert _rows(container) == 0


def test_batch_of_100000_tiny_items_is_refused(
    client: TestClient[Litestar], container: Container
) -> None:
    body = b'{"jobs": [' + b",".join([b'{"type":"a"}'] * 100_000) + b"]}"
    _check_refused(_post(client, "/jobs/batch", body, JSON), (413,))
    small = b'{"jobs": [' + b",".join([b'{"type":"a"}'] * 5000) + b"]}"
    assert len(small) < MIB
    refused = _check_refused(_post(client, "/jobs/batch", small, JSON), (422,))
    assert refused["detail"] == {"field": "jobs", "max_items": 1000}
    assert _rows(container) == 0


# --- S3: injection in filters -----------------------------------------------------

INJECTIONS = ["' OR 1=1--", "%", "%25", "\x00", "x" * 10_000, "ü🙂", "'; DROP TABLE jobs;--", "*"]


@pytest.mark.parametrize("name", ["status", "type", "priority", "cursor"])
@pytest.mark.parametrize("value", INJECTIONS, ids=range(len(INJECTIONS)))
def test_injection_in_filters_is_400_or_empty(
    client: TestClient[Litestar], container: Container, name: str, value: str
) -> None:
    client.post("/jobs", json={"type": "victim"})
    response = client.get("/jobs", params={name: value})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        assert response.json()["jobs"] == []
    else:
        assert _check_refused(response)["detail"]["field"] == name
    assert _rows(container) == 1


def test_only_cursors_the_server_issued_are_accepted(client: TestClient[Litestar]) -> None:
    for _ in range(3):
        client.post("/jobs", json={"type": "a"})
    issued = client.get("/jobs", params={"limit": 1}).json()["next_cursor"]
    assert client.get("/jobs", params={"cursor": issued}).status_code == 200
    seq = issued[1:].partition(".")[0]
    for forged in (f"s{seq}", f"s{int(seq) + 1}.{issued[-8:]}", issued[:-1] + "x", "s1"):
        refused = _check_refused(client.get("/jobs", params={"cursor": forged}))
        assert refused["detail"]["field"] == "cursor", forged
