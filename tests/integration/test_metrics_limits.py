"""/metrics stays bounded and can be protected: the first VESPER_METRICS_MAX_TYPES job
types keep their label and the rest count as `other` (3,000 types made a scrape of
42 MB); with VESPER_METRICS_AUTH=1 it needs the bearer token like the rest of the API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

import vesper
from vesper.domain.submission import JobRequest
from vesper.entrypoints.app import App
from vesper.entrypoints.http.app import create_app
from vesper.entrypoints.http.routes.metrics import metrics_route
from vesper.entrypoints.service import build_runner
from vesper.entrypoints.settings import ConfigError, Settings

MEMORY = {"VESPER_STORAGE": "memory", "VESPER_POLL_INTERVAL": "50ms"}
TOKEN = "metrics-t0ken-value"


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[tuple[App, TestClient[Litestar]]]:
    """An App (its environment the test's parameter) with a catch-all consumer, served
    over HTTP with the /metrics route as `vesper serve` mounts it."""
    env: Mapping[str, str] = request.param
    app = App({**MEMORY, **env})

    @app.consumer
    def anything(job: vesper.Job) -> None:
        pass

    http = create_app(
        app.container, settings=app.settings, route_handlers=[metrics_route(app.container)]
    )
    with TestClient(http) as client:
        yield app, client
    app.close()


def run_types(app: App, count: int) -> None:
    """Submit one job of each of `count` distinct types and run them all to done."""
    types = [f"type-{i:04d}" for i in range(count)]
    for start in range(0, count, 1000):  # the largest batch
        app.enqueue_many(JobRequest(type=t) for t in types[start : start + 1000])
    asyncio.run(asyncio.wait_for(build_runner(app).run(until_idle=True), 120))


def type_labels(text: str) -> dict[str, set[str]]:
    """The distinct `type` label values of each metric family in a scrape."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "type" in sample.labels:
                found.setdefault(family.name, set()).add(sample.labels["type"])
    return found


def total(text: str, name: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


@pytest.mark.parametrize("served", [{}], indirect=True)
def test_3000_types_keep_100_labels_and_a_small_scrape(
    served: tuple[App, TestClient[Litestar]],
) -> None:
    app, client = served
    run_types(app, 3000)
    response = client.get("/metrics")
    assert response.status_code == 200
    labels = type_labels(response.text)
    assert labels.keys() >= {"vesper_jobs_enqueued", "vesper_jobs_succeeded"}
    for name, values in labels.items():
        assert len(values) <= 100 + 1, name
    # the first 100 types seen keep their names; nothing is lost from the counts
    assert labels["vesper_jobs_enqueued"] == {f"type-{i:04d}" for i in range(100)} | {"other"}
    assert total(response.text, "vesper_jobs_enqueued_total") == 3000
    assert total(response.text, "vesper_jobs_succeeded_total") == 3000
    # 101 label values at one priority: 0.72 MB (mostly histogram buckets) however
    # many types run; unbounded, every type added about 7 KB
    assert len(response.content) < 1_000_000, len(response.content)


@pytest.mark.parametrize("served", [{"VESPER_METRICS_MAX_TYPES": "3"}], indirect=True)
def test_max_types_is_configurable(served: tuple[App, TestClient[Litestar]]) -> None:
    app, client = served
    run_types(app, 10)
    labels = type_labels(client.get("/metrics").text)
    assert labels["vesper_jobs_succeeded"] == {"type-0000", "type-0001", "type-0002", "other"}


@pytest.mark.parametrize(
    "served", [{"VESPER_API_TOKEN": TOKEN, "VESPER_METRICS_AUTH": "1"}], indirect=True
)
def test_metrics_auth_requires_the_token(served: tuple[App, TestClient[Litestar]]) -> None:
    _, client = served
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    allowed = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 200
    assert "vesper_worker_busy_slots" in allowed.text
    assert client.get("/health").status_code == 200  # probes stay public


@pytest.mark.parametrize("served", [{"VESPER_API_TOKEN": TOKEN}], indirect=True)
def test_metrics_stay_public_by_default(served: tuple[App, TestClient[Litestar]]) -> None:
    _, client = served
    assert client.get("/metrics").status_code == 200
    assert client.get("/jobs").status_code == 401


def test_metrics_auth_without_a_token_stops_start_up() -> None:
    with pytest.raises(ConfigError, match=r"^VESPER_METRICS_AUTH=1: needs VESPER_API_TOKEN"):
        Settings.from_env({**MEMORY, "VESPER_METRICS_AUTH": "1"})
