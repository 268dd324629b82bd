"""The dashboard in a real browser: headless Chromium (Debian's) driven by Selenium.

Each test serves the admin app in a subprocess (uvicorn on a free loopback port) over
the test's own schema, signs in through the login page, and works the page as an
operator would: buttons, confirmation dialogs, filters. Waiting is WebDriverWait on
what the page shows, never a sleep. Screenshots go to ``test-artifacts/browser/``.
Skipped, saying why, when chromium or chromedriver is not installed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from backfill_sa.config import WorkerConfig
from backfill_sa.tasks import TaskRegistry
from backfill_sa.worker import WorkerRunner
from tests.admin.conftest import TOKEN, UTC, Rows, admin_env, served_admin

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
WAIT = 20  # seconds: the longest any page change may take before the test fails

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="headless browser tests need Debian's chromium and chromium-driver "
    "(apt-get install -y chromium chromium-driver; .ci/run installs them)",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A fresh headless Chromium with its own profile, nothing fetched from outside."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def site(database_url: str, schema: str) -> AsyncIterator[str]:
    """The admin app served over the test's schema, with the test token."""
    env = admin_env(BACKFILL_ADMIN_TOKEN=TOKEN)
    async with served_admin(database_url, schema, env=env, log_level="WARNING") as (url, _):
        yield url


def _wait(driver: WebDriver, condition: Callable[[WebDriver], Any]) -> Any:
    return WebDriverWait(driver, WAIT, ignored_exceptions=[StaleElementReferenceException]).until(
        condition
    )


def _shot(driver: WebDriver, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    assert driver.save_screenshot(str(path))
    return path


def _sign_in(driver: WebDriver, url: str) -> None:
    driver.get(url + "/")
    _wait(driver, expected_conditions.url_to_be(url + "/login"))
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(driver, expected_conditions.url_to_be(url + "/"))
    _wait(driver, lambda d: "updated" in d.find_element(By.ID, "status").text)


def _text(driver: WebDriver, css: str) -> str:
    return str(_wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, css)).text)


def _click(driver: WebDriver, css: str) -> None:
    """Click what ``css`` finds, finding it again if a refresh redrew it meanwhile."""

    def clicked(d: WebDriver) -> bool:
        element: WebElement = d.find_element(By.CSS_SELECTOR, css)
        element.click()
        return True

    _wait(driver, clicked)


def _confirm(driver: WebDriver, *, accept: bool = True) -> str:
    alert = _wait(driver, expected_conditions.alert_is_present())
    question = str(alert.text)
    if accept:
        alert.accept()
    else:
        alert.dismiss()
    return question


def _worker_config(database_url: str, schema: str) -> WorkerConfig:
    return WorkerConfig(
        database_url=database_url,
        schema=schema,
        queues={"bulk": 1},
        poll_interval=dt.timedelta(milliseconds=50),
        shutdown_timeout=dt.timedelta(seconds=2),
    )


async def _seed(rows: Rows) -> dict[str, int]:
    now = dt.datetime.now(UTC)
    ids = {
        "waiting": await rows.add_job(queue="bulk", run_at=now - dt.timedelta(minutes=2)),
        "running": await rows.add_job(
            task="resize", queue="images", state="running", locked_by="w1", locked_at=now
        ),
        "failing": await rows.add_job(
            task="charge",
            queue="bulk",
            state="scheduled",
            run_at=now + dt.timedelta(hours=1),
            attempts=2,
            last_error={"type": "TimeoutError", "message": "gateway slow"},
        ),
        "dead": await rows.add_dead_letter(task="send_email", payload={"to": "c@example.com"}),
        "dead2": await rows.add_dead_letter(task="send_email"),
        "other": await rows.add_dead_letter(task="render", failure_reason="permanent_error"),
        "done": await rows.add_job(
            task="report", state="completed", finished_at=now, result={"rows": 12}
        ),
    }
    await rows.add_worker("w1", silent_for=dt.timedelta(seconds=1), queues={"images": 2})
    return ids


async def test_dashboard_loads_with_data(browser: WebDriver, site: str, rows: Rows) -> None:
    ids = await _seed(rows)
    _sign_in(browser, site)
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#queues tr[data-queue="images"]'))
    assert _text(browser, "#available") == "1"
    assert _text(browser, "#running") == "1"
    assert _text(browser, "#dead") == "3"
    assert _text(browser, "#alive") == "1"
    assert _text(browser, "#user") == "admin"
    bulk = _text(browser, '#queues tr[data-queue="bulk"]')
    assert bulk.startswith("bulk 1 1 0 2m")
    assert "active" in bulk
    assert browser.find_elements(By.CSS_SELECTOR, '#queues tr[data-queue="bulk"] svg.spark')
    running = _text(browser, f'#running-jobs tr[data-job="{ids["running"]}"]')
    assert "resize images w1" in running
    assert "TimeoutError: gateway slow" in _text(browser, "#failing")
    # A job's id opens its detail: timeline, result, error, payload.
    _click(browser, f'#failing tr[data-job="{ids["failing"]}"] button[data-action="detail"]')
    _wait(browser, lambda d: d.find_element(By.ID, "detail").is_displayed())
    assert _text(browser, "#detail-title") == f"Job {ids['failing']}: charge (scheduled)"
    assert '"message": "gateway slow"' in _text(browser, "#detail-error")
    assert "enqueued" in _text(browser, "#detail-timeline")
    assert _text(browser, "#detail-attempts").startswith("attempt 2 of 8")
    assert "w1" in _text(browser, "#workers")
    assert _text(browser, f'#completed tr[data-job="{ids["done"]}"]').endswith('{"rows":12}')
    spark = browser.execute_script(
        "return document.querySelector('#queues tr[data-queue=\"bulk\"] svg title').textContent"
    )
    assert spark.startswith("completed per minute, last 30 minutes: ")
    assert spark.endswith(", 1")  # the job completed this minute
    assert "3 in all" in _text(browser, "#dlq-stats")
    entries = browser.find_elements(By.CSS_SELECTOR, "#dlq tr[data-entry]")
    assert [int(str(e.get_attribute("data-entry"))) for e in entries] == sorted(
        (ids["dead"], ids["dead2"], ids["other"]), reverse=True
    )
    browser.set_window_size(1280, 1700)  # the whole page in one screenshot
    _wait(browser, lambda d: "3 in all" in d.find_element(By.ID, "dlq-stats").text)
    _shot(browser, "dashboard")

    # Filters narrow the DLQ; a bulk action asks first, saying how many (a dry run).
    browser.find_element(By.ID, "f-task").send_keys("send_email")
    _click(browser, "#apply")
    _wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#dlq tr[data-entry]")) == 2)
    _click(browser, "#bulk-delete")
    assert _confirm(browser, accept=False) == ("Delete 2 dead-letter entries (task=send_email)?")
    assert await rows.dead_letter_ids() == sorted((ids["dead"], ids["dead2"], ids["other"]))


async def test_a_dead_letter_is_requeued_from_the_page_and_then_runs(
    browser: WebDriver, site: str, rows: Rows, database_url: str, schema: str
) -> None:
    ids = await _seed(rows)
    _sign_in(browser, site)
    row = f'#dlq tr[data-entry="{ids["dead"]}"]'
    _click(browser, row + ' button[data-action="requeue"]')
    assert _confirm(browser) == f"Requeue dead-letter entry {ids['dead']} (send_email)?"
    _wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, row))
    assert _text(browser, "#flash") == f"entry {ids['dead']} requeued"
    _shot(browser, "requeued")
    assert ids["dead"] not in await rows.dead_letter_ids()
    (job,) = [j for j in await rows.jobs() if j["task"] == "send_email"]
    assert (job["state"], job["payload"]) == ("available", {"to": "c@example.com"})

    sent: list[Any] = []
    registry = TaskRegistry()
    registry.register("send_email", lambda payload, ctx: sent.append(payload["to"]))
    await rows.clear_jobs_except(job["id"])
    result = await WorkerRunner(_worker_config(database_url, schema), registry).run_once()
    assert result.succeeded == 1
    assert sent == ["c@example.com"]
    done = await rows.job(job["id"])
    assert done is not None
    assert done["state"] == "completed"


async def test_a_queue_is_paused_and_resumed(browser: WebDriver, site: str, rows: Rows) -> None:
    await _seed(rows)
    _sign_in(browser, site)
    row = '#queues tr[data-queue="bulk"]'
    _click(browser, row + ' button[data-action="pause"]')
    assert _confirm(browser) == "Pause queue bulk?"
    _wait(browser, lambda d: "paused" in d.find_element(By.CSS_SELECTOR, row).text)
    queue = await rows.queue("bulk")
    assert queue is not None
    assert queue["paused"] is True
    _shot(browser, "paused")

    _click(browser, row + ' button[data-action="resume"]')
    assert _confirm(browser) == "Resume queue bulk?"
    _wait(browser, lambda d: "active" in d.find_element(By.CSS_SELECTOR, row).text)
    queue = await rows.queue("bulk")
    assert queue is not None
    assert queue["paused"] is False


async def test_the_page_fits_a_390px_phone(browser: WebDriver, site: str, rows: Rows) -> None:
    await _seed(rows)
    browser.set_window_size(390, 844)
    _sign_in(browser, site)
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#dlq tr[data-entry]"))
    inner, scroll, client = browser.execute_script(
        "return [window.innerWidth, document.documentElement.scrollWidth,"
        " document.documentElement.clientWidth]"
    )
    assert inner <= 400  # the window really is phone-sized
    assert scroll <= client, f"the page scrolls sideways: {scroll}px of content in {client}px"
    _shot(browser, "phone-390px")
    # The wide tables scroll inside their own boxes instead.
    assert browser.execute_script(
        "return [...document.querySelectorAll('.scroll')].some(b => b.scrollWidth > b.clientWidth)"
    )


async def test_a_running_job_is_cancelled_from_the_page(
    browser: WebDriver, site: str, rows: Rows, database_url: str, schema: str
) -> None:
    started, stopped = asyncio.Event(), asyncio.Event()

    async def slow(payload: Any, ctx: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # runs until it is cancelled
        except asyncio.CancelledError:
            stopped.set()
            raise

    registry = TaskRegistry()
    registry.register("slow", slow)
    job_id = await rows.add_job(task="slow", queue="bulk")
    handle = WorkerRunner(_worker_config(database_url, schema), registry).start()
    try:
        await asyncio.wait_for(started.wait(), timeout=WAIT)
        # Selenium blocks: drive it from a thread so the worker keeps running here.
        await asyncio.to_thread(_sign_in, browser, site)
        row = f'#running-jobs tr[data-job="{job_id}"]'
        await asyncio.to_thread(_click, browser, row + ' button[data-action="cancel"]')
        assert await asyncio.to_thread(_confirm, browser) == f"Cancel running job {job_id} (slow)?"
        await asyncio.wait_for(stopped.wait(), timeout=WAIT)
        await asyncio.to_thread(_wait, browser, lambda d: not d.find_elements(By.CSS_SELECTOR, row))
        assert await asyncio.to_thread(_text, browser, "#flash") == (
            f"job {job_id}: cancel requested"
        )
        await asyncio.to_thread(_shot, browser, "cancelled")
    finally:
        await handle.stop()
    job = await rows.job(job_id)
    assert job is not None
    assert job["state"] == "cancelled"
    assert job["cancel_requested_at"] is not None
