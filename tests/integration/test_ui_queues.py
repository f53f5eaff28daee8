"""The dashboard's queue parts, in process on the memory store: the queues page with its
counts and settings, pause/resume and limits through its forms, jobs by queue on the
overview, and the jobs page's queue filter (the browser test drives pause/resume)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from vesper.entrypoints.http.app import create_app
from vesper.entrypoints.settings import Settings


@pytest.fixture
def ui() -> Iterator[TestClient[Any]]:
    settings = Settings.from_env({"VESPER_STORAGE": "memory"})
    with TestClient(create_app(settings=settings)) as c:
        for queue, n in (("email", 2), ("media", 1)):
            for _ in range(n):
                response = c.post("/jobs", json={"type": "t", "payload": {}, "queue": queue})
                assert response.status_code == 201, response.text
        c.get("/ui")  # the CSRF cookie
        yield c


def form(c: TestClient[Any], **fields: str) -> dict[str, str]:
    return {"csrf_token": c.cookies["vesper_csrf"], **fields}


def queue_of(c: TestClient[Any], name: str) -> dict[str, Any]:
    body: dict[str, Any] = c.get(f"/queues/{name}").json()
    return body


def test_the_queues_page_lists_each_queue_with_counts_and_settings(ui: TestClient[Any]) -> None:
    ui.patch("/queues/media", json={"concurrency": 3, "rate": "50/1s"})
    page = ui.get("/ui/queues")
    assert page.status_code == 200
    assert "no named queues" not in page.text
    rows = page.text.split("<tr>")[2:]  # after the header's row
    assert [row.split("<td>")[1].split("</td>")[0] for row in rows] == ["email", "media"]
    assert "pending 2" in rows[0]
    assert 'name="concurrency" value="3"' in rows[1]
    assert 'name="rate" value="50/1s"' in rows[1]
    assert 'name="aging" value=""' in rows[1]


def test_pause_resume_and_limits_through_the_forms(ui: TestClient[Any]) -> None:
    paused = ui.post("/ui/queues/email/pause", data=form(ui), follow_redirects=False)
    assert (paused.status_code, paused.headers["location"]) == (303, "/ui/queues")
    assert queue_of(ui, "email")["paused"] is True
    ui.post("/ui/queues/email/resume", data=form(ui))
    assert queue_of(ui, "email")["paused"] is False

    limits = form(ui, concurrency="4", rate=" 10/1m ", key_concurrency="", aging="5s")
    assert ui.post("/ui/queues/email/limits", data=limits).status_code == 200
    email = queue_of(ui, "email")
    assert (email["concurrency"], email["rate"], email["aging"]) == (4, "10/1m", "5s")
    # an empty field clears its limit; a field left out of the form keeps it
    ui.post("/ui/queues/email/limits", data=form(ui, concurrency=""))
    email = queue_of(ui, "email")
    assert (email["concurrency"], email["rate"]) == (None, "10/1m")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"concurrency": "0"}, "concurrency"),
        ({"concurrency": "²"}, "concurrency"),
        ({"rate": "fast"}, "rate"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_limit_is_refused_naming_it(
    ui: TestClient[Any], fields: dict[str, str], named: str
) -> None:
    refused = ui.post("/ui/queues/email/limits", data=form(ui, **fields))
    assert refused.status_code == 400
    assert named in refused.text
    assert queue_of(ui, "email")["concurrency"] is None


def test_the_overview_shows_active_jobs_by_queue(ui: TestClient[Any]) -> None:
    ui.patch("/queues/idle", json={"concurrency": 1})  # settings, no jobs: listed with 0
    page = ui.get("/ui")
    assert "Active jobs by queue" in page.text
    table = page.text.split('id="queues-h"')[1].split("</table>")[0]
    rows = [row.split("</tr>")[0] for row in table.split("<tbody>")[1].split("<tr>")[1:]]
    num = '<td class="num">'
    assert rows == [
        f"<td>email</td>{num}2</td>{num}0</td>",
        f"<td>idle</td>{num}0</td>{num}0</td>",
        f"<td>media</td>{num}1</td>{num}0</td>",
    ]


def test_the_jobs_page_filters_by_queue(ui: TestClient[Any]) -> None:
    page = ui.get("/ui/jobs", params={"queue": "media"})
    assert page.status_code == 200
    assert page.text.count('name="job"') == 1
    assert 'id="f-queue" name="queue" value="media"' in page.text
    assert ui.get("/ui/jobs", params={"queue": "no spaces"}).status_code == 400
