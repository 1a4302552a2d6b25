"""Headless Chromium for the browser tests (the built book, and live JupyterLab): Debian's
``chromium`` and ``chromium-driver``, named, so that Selenium Manager never runs and nothing is
downloaded; flags that keep it off the network."""

from __future__ import annotations

import base64
import contextlib
import tempfile
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,1000"]


@contextlib.contextmanager
def chromium(timeout: float):
    """Headless Chromium with a fresh profile, keeping the console log; pages and scripts time out
    after ``timeout`` seconds."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: install Chromium and its driver with "
                    "`apt-get install chromium chromium-driver` (as .ci/run does).")
    with tempfile.TemporaryDirectory(prefix="ibtools-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        driver.set_page_load_timeout(timeout)
        driver.set_script_timeout(timeout)
        try:
            yield driver
        finally:
            driver.quit()


def wait_for(driver, script: str, timeout: float, *args):
    """Wait until ``script`` (called with ``args``) returns something truthy, and return it."""
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: d.execute_script(script, *args))


def save_full_page_screenshot(driver, path: Path) -> None:
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))
