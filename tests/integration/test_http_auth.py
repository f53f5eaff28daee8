"""Bearer authentication (docs/reliability.md, S1): with VESPER_API_TOKEN set, every route but
/health, /ready and /metrics needs exactly `Authorization: Bearer <token>`."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from litestar import Litestar, MediaType, get
from litestar.testing import TestClient

from vesper.entrypoints.container import build_container
from vesper.entrypoints.http import auth, create_app
from vesper.entrypoints.settings import Settings

TOKEN = "s3cr3t-t0ken-value"
GOOD = {"Authorization": f"Bearer {TOKEN}"}
BAD_HEADERS = {
    "no header": {},
    "wrong token": {"Authorization": "Bearer wrong"},
    "lowercase scheme": {"Authorization": f"bearer {TOKEN}"},
    "basic": {"Authorization": "Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode()},
    "trailing space": {"Authorization": f"Bearer {TOKEN} "},
    "double space": {"Authorization": f"Bearer  {TOKEN}"},
    "token alone": {"Authorization": TOKEN},
    "prefix of token": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "empty bearer": {"Authorization": "Bearer "},
}
JOB = "5f0c4a4e-8a4b-4c5e-9d3e-2a1b0c9d8e7f"  # fixed: test ids stay stable
PROTECTED = [
    ("POST", "/jobs", {"type": "a"}),
    ("POST", "/jobs/batch", {"jobs": [{"type": "a"}]}),
    ("GET", f"/jobs/{JOB}", None),
    ("GET", "/jobs", None),
    ("POST", f"/jobs/{JOB}/cancel", None),
    ("POST", f"/jobs/{JOB}/retry", None),
    ("GET", "/workers", None),
    ("GET", "/stats", None),
    ("GET", "/schema", None),
    ("GET", "/schema/openapi.json", None),
]


@get("/metrics", media_type=MediaType.TEXT)
async def fake_metrics() -> str:
    """Stands for the /metrics route another module adds."""
    return "vesper_up 1\n"


@pytest.fixture
def client() -> Iterator[TestClient[Litestar]]:
    settings = Settings.from_env({"VESPER_STORAGE": "memory", "VESPER_API_TOKEN": TOKEN})
    container = build_container(settings)
    app = create_app(container, route_handlers=[fake_metrics])
    with TestClient(app) as test_client:
        yield test_client
    container.shutdown_resources()


def _send(
    client: TestClient[Litestar], method: str, path: str, body: Any, headers: dict[str, str]
) -> Any:
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("case", list(BAD_HEADERS))
@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[p[1] for p in PROTECTED])
def test_protected_routes_refuse_without_the_exact_token(
    client: TestClient[Litestar], case: str, method: str, path: str, body: Any
) -> None:
    response = _send(client, method, path, body, BAD_HEADERS[case])
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    payload = response.json()
    assert set(payload) == {"error", "detail"}
    assert TOKEN not in response.text


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[p[1] for p in PROTECTED])
def test_protected_routes_admit_the_token(
    client: TestClient[Litestar], method: str, path: str, body: Any
) -> None:
    response = _send(client, method, path, body, GOOD)
    assert response.status_code in (200, 201, 404), response.text


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics"])
def test_probes_and_metrics_are_public(client: TestClient[Litestar], path: str) -> None:
    assert client.get(path).status_code == 200
    assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 200


def test_unauthenticated_body_is_not_read(client: TestClient[Litestar]) -> None:
    # 401 before the body: a 20 MiB upload without a token is not parsed (no 413).
    response = client.post("/jobs", content=b" " * (20 * 1024 * 1024))
    assert response.status_code == 401


def test_openapi_declares_the_bearer_scheme(client: TestClient[Litestar]) -> None:
    spec = client.get("/schema/openapi.json", headers=GOOD).json()
    assert spec["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer"}
    }
    assert spec["paths"]["/jobs"]["post"]["security"] == [{"bearerAuth": []}]
    assert "security" not in spec["paths"]["/health"]["get"]
    assert "security" not in spec["paths"]["/ready"]["get"]


def test_token_never_reaches_the_logs(
    client: TestClient[Litestar], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for headers in (*BAD_HEADERS.values(), GOOD):
        client.post("/jobs", json={"type": "a"}, headers=headers)
        client.get("/nope", headers=headers)
    assert TOKEN not in caplog.text
    assert TOKEN[:8] not in caplog.text


def test_comparison_uses_compare_digest(
    client: TestClient[Litestar], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real: Callable[[bytes, bytes], bool] = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert client.get("/stats", headers=GOOD).status_code == 200
    assert client.get("/stats", headers={"Authorization": "Bearer x"}).status_code == 401
    assert calls == [
        (f"Bearer {TOKEN}".encode(), f"Bearer {TOKEN}".encode()),
        (b"Bearer x", f"Bearer {TOKEN}".encode()),
    ]


def test_no_token_configured_means_no_auth() -> None:
    container = build_container({"VESPER_STORAGE": "memory"})
    with TestClient(create_app(container)) as client:
        assert client.get("/stats").status_code == 200
        assert client.get("/schema/openapi.json").status_code == 200
    container.shutdown_resources()
