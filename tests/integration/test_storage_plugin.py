"""A storage adapter from another package, found through the `vesper.storage` entry
points: it passes the contract suite and VESPER_STORAGE alone selects it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest

from tests.integration.harness import REPO
from vesper.application.ports import Store
from vesper.entrypoints.container import build_container
from vesper.entrypoints.settings import storage_plugins
from vesper.testing import StoreContract, StoreFactory, StoreOpener

PLUGIN_SITE = Path(__file__).resolve().parents[1] / "plugin_site"


@pytest.fixture(autouse=True)
def installed_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGIN_SITE))


class TestPluginStore(StoreContract):
    @pytest.fixture
    def store_factory(self) -> Iterator[StoreFactory]:
        containers = []

        def fresh() -> StoreOpener:
            env = {
                "VESPER_STORAGE": "teststore",
                "VESPER_DATABASE_URL": f"teststore://{uuid.uuid4().hex}",
            }
            container = build_container(env)
            containers.append(container)
            store = container.store()

            def same_store() -> AbstractContextManager[Store]:
                return nullcontext(store)

            return same_store

        yield fresh
        for container in containers:
            container.shutdown_resources()


def test_the_plugin_is_listed_and_selected_by_vesper_storage_alone() -> None:
    assert "teststore" in storage_plugins()
    container = build_container({"VESPER_STORAGE": "teststore"})
    try:
        store = container.store()
        assert type(store).__module__ == "vesper_teststore"
    finally:
        container.shutdown_resources()


def test_the_cli_uses_the_plugin_when_vesper_storage_names_it() -> None:
    env = {
        **os.environ,
        "VESPER_STORAGE": "teststore",
        "PYTHONPATH": os.pathsep.join([str(PLUGIN_SITE), str(REPO)]),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vesper.entrypoints.cli",
            "enqueue",
            "hello",
            "--payload",
            '{"a": 1}',
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["type"] == "hello"


def test_an_unknown_storage_name_is_one_clear_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vesper.entrypoints.cli", "status"],
        cwd=REPO,
        env={**os.environ, "VESPER_STORAGE": "nosuchstore"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("vesper: VESPER_STORAGE='nosuchstore': expected one of")
    assert len(result.stderr.strip().splitlines()) == 1
