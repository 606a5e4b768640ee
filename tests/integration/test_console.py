"""The web console (/ui) in a real browser: Debian's headless Chromium driven by Selenium through chromium-driver,
against a real stack with two tenants, an admin and a worker.

``CONSOLE_SCREENSHOTS=DIR`` saves a screenshot of each view there (docs/console/ holds the committed ones).
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from services.testing.generator import IDLE_MODEL

pytestmark = pytest.mark.integration

BOB = {"Authorization": "Bearer bob-key"}


@pytest.fixture(scope="module")
def api(tenants_api: str) -> str:
    return tenants_api


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "chromium and chromium-driver are missing: make setup installs them (apt-get)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path)})
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    chrome.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    yield chrome
    chrome.quit()


def until(browser: WebDriver, condition, what: str, timeout: float = 60):  # type: ignore[no-untyped-def]
    return WebDriverWait(browser, timeout, poll_frequency=0.1).until(lambda _: condition(), message=what)


def text(browser: WebDriver, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text


def use_key(browser: WebDriver, key: str) -> None:
    field = browser.find_element(By.ID, "key")
    field.clear()
    field.send_keys(key)
    browser.find_element(By.ID, "use-key").click()


def screenshot(browser: WebDriver, name: str) -> None:
    if folder := os.environ.get("CONSOLE_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))


def test_submit_watch_and_see_every_image_as_a_tenant(api: str, browser: WebDriver, tmp_path: Path) -> None:
    bobs = httpx.post(f"{api}/v1/jobs", json={"prompts": ["bob's secret"], "model": IDLE_MODEL}, headers=BOB).json()
    browser.get(f"{api}/ui/")
    use_key(browser, "wrong-key")
    until(browser, lambda: "refused" in text(browser, "message"), "the wrong key refused")
    assert not browser.find_element(By.ID, "nav").is_displayed()

    use_key(browser, "alice-key")
    until(browser, lambda: text(browser, "who") == "tenant key", "alice's key accepted")
    stored = browser.execute_script("return [sessionStorage.getItem('gift-key'), localStorage.length, document.cookie]")
    assert stored == ["alice-key", 0, ""], "the key is kept for the tab only"

    browser.find_element(By.LINK_TEXT, "Submit").click()
    until(browser, lambda: Select(browser.find_element(By.ID, "model")).options, "the models")
    browser.find_element(By.ID, "prompts").send_keys("a red circle on grass\na blue square at night")
    for field, value in (("per-prompt", "3"), ("steps", "30"), ("seed", "7")):
        browser.find_element(By.ID, field).clear()
        browser.find_element(By.ID, field).send_keys(value)
    screenshot(browser, "submit")
    browser.find_element(By.ID, "submit").click()
    until(browser, lambda: browser.current_url.split("#")[-1].startswith("job/"), "the job's view")
    job_id = browser.current_url.rsplit("/", 1)[-1]
    seen = set()

    def finished() -> bool:
        # One read of both: the page may change between two WebDriver calls.
        counts, state = browser.execute_script(
            "return ['job-counts', 'job-state'].map((id) => document.getElementById(id).textContent)"
        )
        seen.add(counts.split(" ")[0])
        return bool(state == "succeeded")

    until(browser, finished, "the job to succeed in the page", timeout=120)
    assert "6/6" in seen and len(seen) > 1, f"progress was seen live: {sorted(seen)}"
    until(browser, lambda: browser.execute_script(LOADED) == 6, "every image shown")
    captions = [f.text for f in browser.find_elements(By.CSS_SELECTOR, "#gallery figcaption")]
    prompts = ["a red circle on grass"] * 3 + ["a blue square at night"] * 3
    assert captions == [f"{p}\n#{i} · seed {7 + i} · 30 steps" for i, p in enumerate(prompts)]
    screenshot(browser, "job")

    browser.find_elements(By.CSS_SELECTOR, "#gallery img")[4].click()
    until(browser, lambda: browser.find_element(By.ID, "lightbox").is_displayed(), "the full-size image")
    assert "seed 11" in text(browser, "lightbox-caption") and "32×32 px" in text(browser, "lightbox-caption")
    screenshot(browser, "image")
    browser.find_element(By.ID, "lightbox").click()

    browser.find_element(By.ID, "job-archive").click()
    archive = tmp_path / f"{job_id}.tar"
    until(browser, archive.exists, "the archive downloaded")
    time.sleep(0.5)  # the browser renames the finished download into place; give it a moment to close the file
    with tarfile.open(fileobj=io.BytesIO(archive.read_bytes())) as tar:
        assert sorted(n for n in tar.getnames() if n.endswith(".png")) == [f"{i:06d}.png" for i in range(6)]

    browser.find_element(By.LINK_TEXT, "Jobs").click()
    until(browser, lambda: job_id in text(browser, "jobs"), "the job in alice's listing")
    assert "succeeded" in text(browser, "jobs") and "6/6" in text(browser, "jobs")
    screenshot(browser, "jobs")
    browser.find_element(By.LINK_TEXT, "Overview").click()
    until(browser, lambda: "tinyworld" in text(browser, "workers"), "the worker in the overview")
    until(browser, lambda: text(browser, "rate") != "–", "a rate from two polls")
    screenshot(browser, "overview")
    assert bobs["id"] not in browser.page_source and "bob's secret" not in browser.page_source

    browser.get(f"{api}/ui/#job/{bobs['id']}")
    until(browser, lambda: text(browser, "job-state") == "not found", "bob's job hidden from alice")
    assert "bob's secret" not in browser.page_source


def test_the_admin_sees_every_tenant_and_cancels(api: str, browser: WebDriver) -> None:
    bobs = httpx.post(f"{api}/v1/jobs", json={"prompts": ["to cancel"], "model": IDLE_MODEL}, headers=BOB).json()
    browser.get(f"{api}/ui/")
    use_key(browser, "admin-key")
    until(browser, lambda: text(browser, "who") == "admin key", "the admin's key accepted")
    submit = browser.find_element(By.CSS_SELECTOR, "nav a[data-view=submit]")
    assert not submit.is_displayed(), "an admin has no jobs of its own"
    browser.find_element(By.LINK_TEXT, "Admin").click()
    row = f"#admin-jobs tr[data-job='{bobs['id']}']"
    until(browser, lambda: browser.find_elements(By.CSS_SELECTOR, row), "bob's job in the admin's listing")
    assert "bob" in browser.find_element(By.CSS_SELECTOR, row).text
    screenshot(browser, "admin")
    browser.find_element(By.CSS_SELECTOR, f"{row} button").click()
    until(browser, lambda: "cancelled" in browser.find_element(By.CSS_SELECTOR, row).text, "the cancel shown")
    assert httpx.get(f"{api}/v1/jobs/{bobs['id']}", headers=BOB).json()["status"] == "cancelled"

    browser.find_element(By.ID, "forget").click()
    assert browser.execute_script("return sessionStorage.getItem('gift-key')") is None


LOADED = "return [...document.querySelectorAll('#gallery img')].filter(i => i.complete && i.naturalWidth > 0).length"
