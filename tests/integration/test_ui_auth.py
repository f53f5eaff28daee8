"""The dashboard's login session and CSRF token, in process (the browser tests drive the
same through Chromium): a state-changing POST without the token is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from vesper.entrypoints.http.app import create_app
from vesper.entrypoints.http.ui.session import new_session, session_valid
from vesper.entrypoints.settings import Settings

TOKEN = "ui-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def client(env: dict[str, str]) -> TestClient[Any]:
    settings = Settings.from_env({"VESPER_STORAGE": "memory", **env})
    return TestClient(create_app(settings=settings))


@pytest.fixture
def guarded() -> Iterator[TestClient[Any]]:
    with client({"VESPER_API_TOKEN": TOKEN}) as c:
        yield c


def log_in(c: TestClient[Any]) -> str:
    c.get("/ui/login")
    csrf = c.cookies["vesper_csrf"]
    response = c.post("/ui/login", data={"token": TOKEN, "csrf_token": csrf, "next": "/ui/jobs"})
    assert response.status_code == 200  # followed to the jobs page
    fresh: str = c.cookies["vesper_csrf"]
    assert fresh != csrf  # a login issues a new CSRF token
    return fresh


def pending_job(c: TestClient[Any]) -> str:
    response = c.post("/jobs", json={"type": "t", "payload": {}}, headers=BEARER)
    job_id: str = response.json()["job_id"]
    return job_id


def test_a_post_without_the_csrf_token_is_refused_and_with_it_works(
    guarded: TestClient[Any],
) -> None:
    csrf = log_in(guarded)
    job_id = pending_job(guarded)
    for form in ({}, {"csrf_token": ""}, {"csrf_token": csrf[:-1] + "x"}):
        refused = guarded.post(f"/ui/jobs/{job_id}/cancel", data=form, follow_redirects=False)
        assert refused.status_code == 403
        assert "CSRF token" in refused.text
    assert guarded.get(f"/jobs/{job_id}", headers=BEARER).json()["status"] == "pending"

    done = guarded.post(
        f"/ui/jobs/{job_id}/cancel", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert (done.status_code, done.headers["location"]) == (
        303,
        f"/ui/jobs/{job_id}?notice=cancelled",
    )
    assert guarded.get(f"/jobs/{job_id}", headers=BEARER).json()["status"] == "cancelled"


def test_the_session_cookie_is_httponly_strict_and_limited_to_the_ui(
    guarded: TestClient[Any],
) -> None:
    guarded.get("/ui/login")
    response = guarded.post(
        "/ui/login",
        data={"token": TOKEN, "csrf_token": guarded.cookies["vesper_csrf"]},
        follow_redirects=False,
    )
    assert response.status_code == 303
    [session] = [h for h in response.headers.get_list("set-cookie") if "vesper_session=" in h]
    attributes = {a.strip().split("=")[0].lower(): a for a in session.split(";")}
    assert "httponly" in attributes
    assert attributes["samesite"].strip().lower() == "samesite=strict"
    assert attributes["path"].strip() == "Path=/ui"
    assert int(attributes["max-age"].split("=")[1]) > 0


def test_a_wrong_token_is_refused_and_pages_need_a_session(guarded: TestClient[Any]) -> None:
    page = guarded.get("/ui/jobs?status=dlq", follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (
        303,
        "/ui/login?next=%2Fui%2Fjobs%3Fstatus%3Ddlq",
    )
    guarded.get("/ui/login")
    wrong = guarded.post(
        "/ui/login", data={"token": TOKEN + "x", "csrf_token": guarded.cookies["vesper_csrf"]}
    )
    assert wrong.status_code == 401
    assert "vesper_session" not in guarded.cookies
    # an action without a session: 401, nothing changed
    job_id = pending_job(guarded)
    action = guarded.post(
        f"/ui/jobs/{job_id}/cancel", data={"csrf_token": guarded.cookies["vesper_csrf"]}
    )
    assert action.status_code == 401
    assert guarded.get(f"/jobs/{job_id}", headers=BEARER).json()["status"] == "pending"


def test_the_json_api_takes_no_session_cookie(guarded: TestClient[Any]) -> None:
    log_in(guarded)
    assert guarded.get("/ui/jobs").status_code == 200
    assert guarded.get("/jobs").status_code == 401  # bearer only
    assert guarded.get("/jobs", headers=BEARER).status_code == 200


def test_logout_ends_the_session_in_the_browser(guarded: TestClient[Any]) -> None:
    csrf = log_in(guarded)
    out = guarded.post("/ui/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert "vesper_session" not in guarded.cookies
    assert guarded.get("/ui", follow_redirects=False).status_code == 303


def test_a_login_redirects_only_inside_the_dashboard(guarded: TestClient[Any]) -> None:
    guarded.get("/ui/login")
    for target in ("https://example.org/", "//example.org/ui", "/jobs"):
        response = guarded.post(
            "/ui/login",
            data={"token": TOKEN, "csrf_token": guarded.cookies["vesper_csrf"], "next": target},
            follow_redirects=False,
        )
        assert response.headers["location"] == "/ui"


def test_sessions_are_signed_and_expire() -> None:
    value = new_session(TOKEN, now=1000.0)
    assert session_valid(value, TOKEN, now=1001.0)
    assert not session_valid(value, "another token", now=1001.0)
    assert not session_valid(value, TOKEN, now=1000.0 + 8 * 3600 + 1)
    expiry, nonce, signature = value.split(".")
    assert not session_valid(f"{int(expiry) + 10**6}.{nonce}.{signature}", TOKEN, now=1001.0)
    assert not session_valid("", TOKEN)


def test_without_a_token_pages_answer_directly_and_forms_still_need_csrf() -> None:
    with client({}) as c:
        assert c.get("/ui", follow_redirects=False).status_code == 200
        job_id = pending_job(c)
        assert c.post(f"/ui/jobs/{job_id}/cancel", data={}).status_code == 403
        csrf = c.cookies["vesper_csrf"]
        ok = c.post(f"/ui/jobs/{job_id}/cancel", data={"csrf_token": csrf})
        assert ok.status_code == 200
        assert c.get(f"/jobs/{job_id}").json()["status"] == "cancelled"


def test_vesper_ui_off_serves_no_dashboard() -> None:
    with client({"VESPER_UI": "off"}) as c:
        assert c.get("/ui").status_code == 404
        assert c.get("/ui/static/htmx.min.js").status_code == 404
        assert c.get("/jobs").status_code == 200


def test_job_data_is_escaped_on_every_page(guarded: TestClient[Any]) -> None:
    log_in(guarded)
    hostile = "<img src=x onerror=alert(1)>"
    response = guarded.post(
        "/jobs",
        json={"type": hostile, "payload": {hostile: hostile}},
        headers={**BEARER, "Idempotency-Key": hostile},
    )
    job_id = response.json()["job_id"]
    for path in (f"/ui/jobs/{job_id}", "/ui/jobs", "/ui/jobs?q=%3Cimg"):
        page = guarded.get(path)
        assert page.status_code == 200
        assert hostile not in page.text
        assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
