"""A real `vesper serve` on SQLite with a worker, and headless Chromium driven by Selenium.

Chromium and its driver are Debian's `chromium` and `chromium-driver` (.ci/run installs
them). Without them the browser tests skip, and under CI=true they fail. The browser
resolves no host but the loopback address: nothing is fetched from outside.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.service import Service

TOKEN = "browser-test-token"
APP = "tests.integration.apps.dashboard:app"


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        reason = (
            "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true, so the browser tests may not be skipped")
        pytest.skip(reason)
    return browser, driver


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("dashboard")
    env = {
        "VESPER_STORAGE": "sqlite",
        "VESPER_DATABASE_URL": f"sqlite:///{directory / 'ui.db'}",
        "VESPER_API_TOKEN": TOKEN,
        "WORKERS": "2",
        "VESPER_POLL_INTERVAL": "200ms",
    }
    service = Service(env, directory / "serve.log", command=("serve", "--app", APP))
    # a loaded 2-core machine starts `vesper serve` (API, worker, migrations) slowly, and
    # may answer a request slowly: the waits allow for it, the checks are the same
    service.http.timeout = httpx.Timeout(60.0)
    try:
        service.wait_ready(timeout=120.0)
        service.http.headers["Authorization"] = f"Bearer {TOKEN}"
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    binary, driver_path = _chromium()
    from selenium import webdriver  # noqa: PLC0415 (dev extra; skipped above without a browser)
    from selenium.webdriver.chrome.service import Service as DriverService  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=DriverService(executable_path=driver_path))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the page screenshots go: docs/ui/ with VESPER_UI_SCREENSHOTS=1 (to refresh the
    README's pictures), a temporary directory otherwise."""
    if os.environ.get("VESPER_UI_SCREENSHOTS") == "1":
        target = Path(__file__).resolve().parents[2] / "docs" / "ui"
        target.mkdir(parents=True, exist_ok=True)
        return target
    return tmp_path
