"""The deployment files hold together: every metric the Grafana dashboard queries is in a
live /metrics scrape, and the Prometheus, Grafana, compose and Docker files parse and
point at each other. (No container engine runs here: this is what can be checked.)"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from litestar import Litestar
from litestar.testing import TestClient

import vesper
from tests.integration.harness import REPO
from tests.integration.test_metrics import run_until_settled, scrape
from vesper.entrypoints.app import App
from vesper.entrypoints.http.app import create_app
from vesper.entrypoints.http.routes.metrics import metrics_route

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "vesper.json"
METRIC_NAME = re.compile(r"\bvesper_[a-zA-Z0-9_]+")


def dashboard_expressions() -> list[str]:
    """Every PromQL expression of every panel (rows included) of the dashboard."""
    board = json.loads(DASHBOARD.read_text())
    expressions: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            expressions.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(board["panels"])
    return expressions


@pytest.fixture(scope="module")
def live_sample_names(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """The sample names of a scrape after jobs ran on SQLite (succeeded, retried, dlq)."""
    db = tmp_path_factory.mktemp("dashboard") / "q.db"
    app = App(
        {
            "VESPER_STORAGE": "sqlite",
            "VESPER_DATABASE_URL": f"sqlite:///{db}",
            "VESPER_RETRY_BASE": "1ms",
            "VESPER_RETRY_CAP": "5ms",
            "VESPER_POLL_INTERVAL": "50ms",
        }
    )

    @app.consumer("ok")
    def ok(job: vesper.Job) -> None:
        pass

    @app.consumer("fail")
    def fail(job: vesper.Job) -> None:
        raise RuntimeError("fails")

    container = app.container
    http: Litestar = create_app(
        container, settings=app.settings, route_handlers=[metrics_route(container)]
    )
    with TestClient(http) as client:
        ids = [client.post("/jobs", json={"type": "ok", "priority": 3}).json()["job_id"]]
        ids.append(client.post("/jobs", json={"type": "fail", "max_retries": 1}).json()["job_id"])
        run_until_settled(app, ids)
        yield {name for name, _ in scrape(client)}
    app.close()


def test_dashboard_has_the_panels_the_issue_asks_for() -> None:
    titles = " | ".join(
        p["title"].lower() for p in json.loads(DASHBOARD.read_text())["panels"] if "title" in p
    )
    for words in ("per second", "priority", "wait percentiles", "run time percentiles"):
        assert words in titles
    for words in ("dead", "fleet size", "lease losses"):
        assert words in titles
    expressions = " ".join(dashboard_expressions())
    assert "histogram_quantile(0.95" in expressions


def test_every_dashboard_metric_is_in_a_live_scrape(live_sample_names: set[str]) -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 20
    missing = {
        name: expr
        for expr in expressions
        for name in METRIC_NAME.findall(expr)
        if name not in live_sample_names
    }
    assert not missing, f"the dashboard queries metrics /metrics does not serve: {missing}"
    for expr in expressions:  # a cheap syntax check: brackets balance
        assert expr.count("(") == expr.count(")"), expr
        assert expr.count("{") == expr.count("}"), expr


def test_dashboard_datasource_is_the_provisioned_one() -> None:
    provisioned = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    uids = {d["uid"] for d in provisioned["datasources"]}
    board = json.loads(DASHBOARD.read_text())
    used = {p["datasource"]["uid"] for p in board["panels"] if "datasource" in p}
    assert used == uids == {"prometheus"}
    providers = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/vesper.yaml").read_text()
    )
    compose = yaml.safe_load((REPO / "deploy/compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    path = providers["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in mounts


@pytest.mark.parametrize(
    ("path", "targets"),
    [
        ("prometheus.yml", ["localhost:8080"]),
        ("deploy/prometheus.yml", ["vesper-1:8080", "vesper-2:8080"]),
    ],
)
def test_prometheus_configs_scrape_vesper(path: str, targets: list[str]) -> None:
    config = yaml.safe_load((REPO / path).read_text())
    assert config["global"]["scrape_interval"] == "15s"
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "vesper"
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == targets


def test_compose_runs_postgres_two_vespers_prometheus_and_grafana() -> None:
    compose = yaml.safe_load((REPO / "deploy/compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "vesper-1", "vesper-2", "prometheus", "grafana"} <= set(services)
    settings_source = (REPO / "src/vesper/entrypoints/settings.py").read_text()
    for name in ("vesper-1", "vesper-2"):
        service = services[name]
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert service["environment"]["DB_HOST"] == "postgres"
        for variable in service["environment"]:  # every variable is one vesper reads
            assert variable.startswith("OTEL_") or f'"{variable}"' in settings_source, variable
    published = {p.split(":")[0] for n in ("vesper-1", "vesper-2") for p in services[n]["ports"]}
    assert published == {"8080", "8081"}
    assert (REPO / "deploy" / "prometheus.yml").exists()


def test_dockerfile_is_multi_stage_non_root_with_health_check() -> None:
    text = (REPO / "Dockerfile").read_text()
    instructions = [line.split()[0] for line in text.splitlines() if line and line[0].isupper()]
    assert instructions.count("FROM") == 2
    assert "AS build" in text
    user = re.search(r"^USER (\S+)$", text, re.MULTILINE)
    assert user
    assert user.group(1) not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", text, re.MULTILINE)
    assert text.rstrip().splitlines()[-1] == 'CMD ["vesper", "serve"]'
    ignored = (REPO / ".dockerignore").read_text()
    assert "*" in ignored.splitlines()  # only what the build copies goes in
