"""GET /queues, GET and PATCH /queues/{name} on every store: counts, settings, unserved
types, and the errors a caller can cause (each names its field)."""

from __future__ import annotations

from datetime import UTC, datetime

from litestar import Litestar
from litestar.testing import TestClient

from tests.integration.http_support import client, container, error_body  # noqa: F401 (fixtures)
from tests.integration.http_support import submit as _submit
from vesper.domain.fleet import WorkerProcess
from vesper.entrypoints.container import Container


def test_list_counts_each_queue_and_names_unserved_types(
    client: TestClient[Litestar], container: Container
) -> None:
    for queue, job_type in (("email", "send"), ("email", "send"), ("media", "resize")):
        _submit(client, type=job_type, queue=queue)
    now = datetime.now(UTC)
    container.register_worker()(
        WorkerProcess(
            id="w1",
            machine="m",
            pid=1,
            concurrency=2,
            started_at=now,
            last_heartbeat=now,
            queues={"email": 2},
            types=("send",),
        )
    )
    response = client.get("/queues")
    assert response.status_code == 200, response.text
    by_name = {q["name"]: q for q in response.json()["queues"]}
    assert sorted(by_name) == ["email", "media"]
    assert by_name["email"]["by_status"]["pending"] == 2
    assert by_name["email"]["unserved_types"] == []
    assert by_name["media"]["unserved_types"] == ["resize"]  # nobody serves media


def test_patch_sets_and_clears_settings_and_get_shows_them(client: TestClient[Litestar]) -> None:
    body = {"paused": True, "concurrency": 3, "rate": "50/1s", "key_concurrency": 1, "aging": "5s"}
    changed = client.patch("/queues/reports", json=body)
    assert changed.status_code == 200, changed.text
    assert {k: changed.json()[k] for k in body} == body
    cleared = client.patch("/queues/reports", json={"concurrency": None, "paused": False})
    assert (cleared.json()["concurrency"], cleared.json()["paused"]) == (None, False)
    assert cleared.json()["rate"] == "50/1s"  # left out: unchanged
    shown = client.get("/queues/reports").json()
    assert (shown["rate"], shown["key_concurrency"], shown["aging"]) == ("50/1s", 1, "5s")
    # a queue with settings and no job is listed
    assert "reports" in {q["name"] for q in client.get("/queues").json()["queues"]}


def test_a_name_nothing_uses_is_an_empty_queue(client: TestClient[Litestar]) -> None:
    empty = client.get("/queues/nobody")
    assert empty.status_code == 200
    assert set(empty.json()["by_status"].values()) == {0}
    assert empty.json()["paused"] is False


def test_bad_input_is_a_400_naming_the_field(client: TestClient[Litestar]) -> None:
    for body, field in (
        ({"concurrency": 0}, "concurrency"),
        ({"rate": "fast"}, "rate"),
        ({"aging": "-1s"}, "aging"),
        ({"paused": "yes"}, "paused"),
        ({"colour": "red"}, "colour"),
    ):
        response = client.patch("/queues/q", json=body)
        assert response.status_code == 400, (body, response.text)
        assert field in response.text, (body, response.text)
    error_body(client.get("/queues/no%20spaces"), 400)
    assert client.get("/queues/q").json()["concurrency"] is None  # nothing was stored
