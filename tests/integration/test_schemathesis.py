"""docs/reliability.md R12 in process: Schemathesis against the app's own OpenAPI document.

The app runs on PostgreSQL with VESPER_API_TOKEN set, and every request carries the token
(the `ignored_auth` and `missing_required_header` checks then probe requests without it).
All four phases run - examples (generated: the document has none), coverage, fuzzing and
stateful - with the default checks, 25 examples per operation, the full-scale row's seed
and one worker, so a run repeats itself exactly. The settings shared with the full-scale
row (`python -m benchmarks.fault_matrix --rows R12`, the `st` CLI against `vesper api`)
are in schemathesis.toml at the repository root.

The run is driven as `st run` drives it, by `schemathesis.engine`, rather than by
`@schema.parametrize()`: that would need the app (and so the database) at import time,
since `schemathesis.pytest.from_fixture` fails on pytest 9.2 (it sets `Node._nodeid`,
which pytest no longer has), and it would leave the stateful phase to a second test.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import schemathesis
from litestar import Litestar
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

from vesper.entrypoints.container import build_container
from vesper.entrypoints.http import create_app
from vesper.testing import postgres as pg

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]
TOKEN = "t"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SEED = 20251128  # docs/reliability.md R12
MAX_EXAMPLES = 25  # the row's CI scale
PHASES = ("examples", "coverage", "fuzzing", "stateful")


@dataclass
class Outcome:
    """What one Schemathesis run saw: checks run and failed, requests, errors, phases."""

    checks: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    phases: dict[str, str] = field(default_factory=dict)
    stop_reason: str = ""


def run_schemathesis(app: Litestar) -> Outcome:
    config = SchemathesisConfig.from_path(REPO / "schemathesis.toml")
    config.update(seed=SEED, max_failures=None)
    project = config.projects.default
    project.update(headers=AUTH, workers=1)
    project.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)
    project.phases.update(phases=list(PHASES))
    schema = schemathesis.openapi.from_asgi(
        "/schema/openapi.json", app, headers=AUTH, config=config
    )
    outcome = Outcome()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            outcome.requests += len(event.recorder.interactions)
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    outcome.checks[check.name] = outcome.checks.get(check.name, 0) + 1
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        interaction = event.recorder.interactions.get(case_id)
                        response = interaction.response if interaction is not None else None
                        got = (
                            f"{response.status_code} {response.content[:300]!r}" if response else ""
                        )
                        outcome.failures.append(
                            f"[{event.phase.value}] {event.recorder.label}: {check.name}: "
                            f"{check.failure_info.failure.title}\n"
                            f"  {check.failure_info.code_sample}\n  -> {got}"
                        )
        elif isinstance(event, events.NonFatalError):
            outcome.errors.append(f"{event.label}: {event.info.format()}")
        elif isinstance(event, events.FatalError):
            outcome.errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.PhaseFinished):
            outcome.phases[event.phase.name.value] = event.status.value
        elif isinstance(event, events.EngineFinished):
            outcome.stop_reason = event.stop_reason.value
            outcome.failures.extend(str(failure) for failure in event.failures)
    return outcome


@pytest.fixture
def pg_app(postgres_database: str) -> Iterator[Litestar]:
    pg.truncate(postgres_database)
    container = build_container(
        {
            "VESPER_STORAGE": "postgres",
            "VESPER_DATABASE_URL": postgres_database,
            "VESPER_API_TOKEN": TOKEN,
        }
    )
    yield create_app(container)
    container.shutdown_resources()


def test_schemathesis_finds_no_failure_in_any_phase(
    pg_app: Litestar, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    outcome = run_schemathesis(pg_app)

    assert outcome.errors == []
    assert outcome.failures == [], "\n".join(outcome.failures)
    assert outcome.stop_reason == "completed"
    # every testing phase ran (a phase with nothing to do would say "skip")
    assert {phase: outcome.phases.get(phase) for phase in PHASES} == dict.fromkeys(
        PHASES, "success"
    ), outcome.phases
    # the default checks, auth and method probes included, all ran
    for check in (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "positive_data_acceptance",
        "missing_required_header",
        "ignored_auth",
        "unsupported_method",
        "use_after_free",
    ):
        assert outcome.checks.get(check, 0) > 0, (check, outcome.checks)
    assert outcome.requests > 300
    # no unhandled exception was logged by the service (a 500 logs its traceback)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("vesper")] == []
