"""The dashboard in a real browser: headless Chromium against a real `vesper serve`."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import TOKEN
from tests.integration.service import Service

pytestmark = pytest.mark.slow

# Generous: on a loaded 2-core machine a page, a worker's poll or an htmx refresh can
# take seconds. A wait only ends early; what it waits for is checked all the same.
WAIT_S = 60.0


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Until `check()` holds. An element missing or replaced while `check` reads it (the
    page still loading after a click, htmx swapping the live part) is "not yet"."""
    from selenium.common.exceptions import (  # noqa: PLC0415
        NoSuchElementException,
        StaleElementReferenceException,
    )

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            if check():
                return
        except (NoSuchElementException, StaleElementReferenceException) as error:
            last = error
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    detail = f" (last: {type(last).__name__})" if last is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")


def by_css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    return driver.find_element(By.CSS_SELECTOR, selector)


def all_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def log_in(driver: Any, service: Service, then: str = "/ui") -> None:
    driver.get(service.url + then)
    if "/ui/login" not in driver.current_url:
        return  # still logged in
    by_css(driver, "#token").send_keys(TOKEN)
    by_css(driver, "form.login button[type=submit]").click()
    wait_for("the page after login", lambda: "/ui/login" not in driver.current_url)


def submit(service: Service, job_type: str, **body: Any) -> str:
    response = service.post("/jobs", json={"type": job_type, **body})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def status_of(service: Service, job_id: str) -> str:
    status: str = service.get(f"/jobs/{job_id}").json()["status"]
    return status


def heading(driver: Any) -> str:
    text: str = by_css(driver, "h1").text
    return text


def test_log_in_open_every_page_and_log_out(browser: Any, dashboard: Service) -> None:
    driver = browser
    driver.get(dashboard.url + "/ui/jobs")
    assert "/ui/login" in driver.current_url  # no session: the login form first

    by_css(driver, "#token").send_keys("not-the-token")
    by_css(driver, "form.login button[type=submit]").click()
    wait_for(
        "the refused login",
        lambda: "not the server's API token" in by_css(driver, "#login-error").text,
    )
    # the refused login is a 401, which the browser logs; nothing else may be there
    [refused] = console_errors(driver)
    assert "/ui/login" in refused["message"]
    assert "401" in refused["message"]

    by_css(driver, "#token").send_keys(TOKEN)
    by_css(driver, "form.login button[type=submit]").click()
    wait_for("the jobs page", lambda: driver.current_url.endswith("/ui/jobs"))
    cookie = driver.get_cookie("vesper_session")
    assert cookie is not None
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")

    for label, title in [
        ("Overview", "Overview"),
        ("Jobs", "Jobs"),
        ("Queues", "Queues"),
        ("Workers", "Workers"),
        ("Schedules", "Schedules"),
    ]:
        by_css(driver, f'nav a[href="{_nav_href(label)}"]').click()
        wait_for(f"the {title} page", lambda t=title: heading(driver) == t)
        assert by_css(driver, "nav a[aria-current=page]").text == label

    # the worker of `vesper serve` is on the workers page, with its slots
    driver.get(dashboard.url + "/ui/workers")
    assert "of 2 slots busy" in by_css(driver, "main h2").text

    by_css(driver, "form.logout button").click()
    wait_for("the login page", lambda: "/ui/login" in driver.current_url)
    assert "logged out" in by_css(driver, ".notice").text
    driver.get(dashboard.url + "/ui")
    assert "/ui/login" in driver.current_url  # the session is gone
    assert console_errors(driver) == []


def _nav_href(label: str) -> str:
    return "/ui" if label == "Overview" else f"/ui/{label.lower()}"


def test_filter_jobs_open_one_and_cancel_it(browser: Any, dashboard: Service) -> None:
    driver = browser
    hostile = "<script>alert(1)</script>"
    held = submit(dashboard, "hold", payload={"note": hostile}, priority=7)
    other = submit(dashboard, "hold", payload={"note": "plain"}, priority=3)
    keyed = dashboard.post(
        "/jobs", json={"type": "hold", "payload": {}}, headers={"Idempotency-Key": "order-4711"}
    ).json()["job_id"]
    log_in(driver, dashboard, "/ui/jobs")

    # filters: type and priority, through the form
    from selenium.webdriver.support.ui import Select  # noqa: PLC0415

    by_css(driver, "#f-type").send_keys("hold")
    Select(by_css(driver, "#f-priority")).select_by_value("7")
    by_css(driver, ".filters button[type=submit]").click()
    wait_for("the filtered list", lambda: "priority=7" in driver.current_url)
    rows = all_css(driver, "table.jobs tbody tr")
    assert [r.find_element("css selector", "a").get_attribute("title") for r in rows] == [held]

    # the search: part of a key, then a whole id
    driver.get(dashboard.url + "/ui/jobs?q=4711")
    assert [a.get_attribute("title") for a in all_css(driver, "table.jobs tbody a")] == [keyed]
    driver.get(dashboard.url + f"/ui/jobs?q={other}")
    assert [a.get_attribute("title") for a in all_css(driver, "table.jobs tbody a")] == [other]

    # open the job: its payload is shown as text, and no script of it ran
    driver.get(dashboard.url + "/ui/jobs?status=pending&type=hold&priority=7")
    by_css(driver, f'a[title="{held}"]').click()
    wait_for("the job page", lambda: held in heading(driver))
    assert hostile in by_css(driver, "#payload").text
    assert all_css(driver, "main script") == []
    assert driver.execute_script("return document.querySelectorAll('script').length") == 1
    assert by_css(driver, "#job-status").text == "pending"

    by_css(driver, "#cancel").click()
    wait_for("the cancelled job", lambda: by_css(driver, "#job-status").text == "cancelled")
    assert "cancelled" in by_css(driver, ".notice").text
    assert status_of(dashboard, held) == "cancelled"
    assert all_css(driver, "#cancel") == []  # a cancelled job offers retry, not cancel
    assert console_errors(driver) == []


def test_retry_a_dlq_job_and_see_it_done(browser: Any, dashboard: Service) -> None:
    driver = browser
    job_id = submit(dashboard, "flaky", payload={"n": 1}, max_retries=0)
    wait_for("the flaky job in dlq", lambda: status_of(dashboard, job_id) == "dlq")
    log_in(driver, dashboard, f"/ui/jobs/{job_id}")
    assert by_css(driver, "#job-status").text == "dlq"
    assert "fail on purpose" in by_css(driver, "#job-error").text

    by_css(driver, "#retry").click()
    # the POST's redirect first: a refresh while it is under way could cancel it
    wait_for("the retry's notice", lambda: "notice=retried" in driver.current_url)

    def shows_done() -> bool:
        driver.refresh()
        return bool(by_css(driver, "#job-status").text == "done")

    wait_for("the retried job done on its page", shows_done)
    assert status_of(dashboard, job_id) == "done"
    assert console_errors(driver) == []


def field(driver: Any, name: str) -> str:
    """The value of the job page's field `name`."""
    for item in all_css(driver, "dl.fields div"):
        if item.find_element("css selector", "dt").text == name:
            text: str = item.find_element("css selector", "dd").text
            return text
    raise AssertionError(f"no field {name!r} on the page")


def test_bulk_cancel_and_retry_the_selected_jobs(browser: Any, dashboard: Service) -> None:
    driver = browser
    first, second, third = (submit(dashboard, "bulkhold", payload={"i": i}) for i in range(3))
    log_in(driver, dashboard, "/ui/jobs?type=bulkhold")

    def select(*job_ids: str) -> None:
        driver.get(dashboard.url + "/ui/jobs?type=bulkhold")
        for job_id in job_ids:
            by_css(driver, f"#sel-{job_id}").click()

    select(first, second)
    by_css(driver, '#bulk button[value="cancel"]').click()
    wait_for("the bulk notice", lambda: bool(all_css(driver, ".notice")))
    assert "2 changed, 0 skipped" in by_css(driver, ".notice").text
    statuses = [status_of(dashboard, j) for j in (first, second, third)]
    assert statuses == ["cancelled", "cancelled", "pending"]

    # a retry takes the cancelled ones; the pending one is not in a status it starts from
    select(first, second, third)
    by_css(driver, '#bulk button[value="retry"]').click()
    wait_for("the bulk notice", lambda: bool(all_css(driver, ".notice")))
    assert "2 changed, 1 skipped" in by_css(driver, ".notice").text
    assert [status_of(dashboard, j) for j in (first, second, third)] == ["pending"] * 3
    assert console_errors(driver) == []


def test_a_running_job_gets_a_cancel_request(browser: Any, dashboard: Service) -> None:
    driver = browser
    job_id = submit(dashboard, "long", payload={})
    wait_for("the long job running", lambda: status_of(dashboard, job_id) == "processing")
    log_in(driver, dashboard, f"/ui/jobs/{job_id}")
    assert field(driver, "cancel requested") == "—"
    assert by_css(driver, "#cancel").text == "Request cancel"

    by_css(driver, "#cancel").click()
    wait_for("the notice", lambda: bool(all_css(driver, ".notice")))
    assert "cancel was requested" in by_css(driver, ".notice").text
    # requested, not done: the job runs until its worker's next renewal (or has just
    # ended); either way no second request is offered
    assert all_css(driver, "#cancel") == []
    assert field(driver, "cancel requested") != "—"
    if by_css(driver, "#job-status").text == "processing":
        assert "Cancel requested" in by_css(driver, "#cancel-requested").text

    def shows_cancelled() -> bool:
        driver.refresh()
        return bool(by_css(driver, "#job-status").text == "cancelled")

    wait_for("the job cancelled by its worker", shows_cancelled)
    assert status_of(dashboard, job_id) == "cancelled"
    assert console_errors(driver) == []


def test_a_job_page_shows_its_result_and_unique_key(browser: Any, dashboard: Service) -> None:
    driver = browser
    job_id = submit(dashboard, "answer", payload={}, unique_key="report-7")
    wait_for("the answer job done", lambda: status_of(dashboard, job_id) == "done")
    log_in(driver, dashboard, f"/ui/jobs/{job_id}")
    assert '"answer": 42' in by_css(driver, "#result").text
    assert field(driver, "unique key") == "report-7"
    assert field(driver, "snoozes") == "0"
    assert console_errors(driver) == []


def test_overview_counts_and_chart_and_screenshots(
    browser: Any, dashboard: Service, screenshots: Path
) -> None:
    driver = browser
    done = [submit(dashboard, "ok", payload={"i": i}) for i in range(5)]
    wait_for("the ok jobs done", lambda: all(status_of(dashboard, j) == "done" for j in done))
    stats = dashboard.get("/stats").json()
    log_in(driver, dashboard, "/ui")
    assert by_css(driver, '[data-status="done"]').text == str(stats["by_status"]["done"])
    assert by_css(driver, "#fleet-processes").text == "1"
    summary = by_css(driver, "#chart-summary").text
    assert summary.startswith(f"{stats['by_status']['done']} done")  # all in the last hour
    assert len(all_css(driver, ".chart svg rect.done")) >= 1
    driver.save_screenshot(str(screenshots / "overview.png"))
    driver.get(dashboard.url + "/ui/jobs")
    driver.save_screenshot(str(screenshots / "jobs.png"))
    driver.get(dashboard.url + f"/ui/jobs/{done[0]}")
    driver.save_screenshot(str(screenshots / "job.png"))
    for name in ("overview", "jobs", "job"):
        assert (screenshots / f"{name}.png").stat().st_size > 10_000
    assert console_errors(driver) == []


def test_live_refresh_and_phone_width(browser: Any, dashboard: Service) -> None:
    driver = browser
    log_in(driver, dashboard, "/ui")
    before = int(by_css(driver, '[data-status="pending"]').text)
    driver.execute_script("window.vesperNotReloaded = true")
    submit(dashboard, "hold", payload={})  # pending for good: no consumer takes it
    # htmx swaps the live part in place (every 5 s): the count changes, the page stays
    wait_for(
        "the overview's own refresh",
        lambda: int(by_css(driver, '[data-status="pending"]').text) == before + 1,
    )
    assert driver.execute_script("return window.vesperNotReloaded === true")
    try:
        driver.set_window_size(390, 844)
        for path in ("/ui", "/ui/jobs", "/ui/workers"):
            driver.get(dashboard.url + path)
            overflow = driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, f"{path} scrolls sideways by {overflow} px at 390 px"
    finally:
        driver.set_window_size(1280, 900)
    assert console_errors(driver) == []


def test_keyboard_reaches_the_skip_link_and_the_filters(browser: Any, dashboard: Service) -> None:
    from selenium.webdriver.common.keys import Keys  # noqa: PLC0415

    driver = browser
    log_in(driver, dashboard, "/ui/jobs")
    body = by_css(driver, "body")
    body.send_keys(Keys.TAB)
    active = driver.switch_to.active_element
    assert active.text == "Skip to content"
    active.send_keys(Keys.ENTER)
    assert driver.current_url.endswith("#main")
    label = by_css(driver, 'label[for="f-status"]')
    assert label.text == "Status"


def test_pause_and_resume_a_queue(browser: Any, dashboard: Service) -> None:
    driver = browser
    submit(dashboard, "hold", payload={})
    log_in(driver, dashboard, "/ui/queues")
    by_css(driver, 'form[action="/ui/queues/default/pause"] button').click()
    wait_for("the paused queue", lambda: "paused" in by_css(driver, "main table").text)
    by_css(driver, 'form[action="/ui/queues/default/resume"] button').click()
    wait_for("the running queue", lambda: "running" in by_css(driver, "main table").text)
    assert console_errors(driver) == []


def test_pause_a_schedule(browser: Any, dashboard: Service) -> None:
    driver = browser
    log_in(driver, dashboard, "/ui/schedules")
    forms = all_css(driver, 'form[action$="/pause"]')
    assert forms, "the test app defines a schedule"
    forms[0].find_element("css selector", "button").click()
    wait_for("the paused schedule", lambda: "paused" in by_css(driver, "main table").text)
    assert console_errors(driver) == []
