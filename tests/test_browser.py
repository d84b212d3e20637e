"""The web face in a real browser: headless Chromium against `rekindle-mail serve` (issue 4).

Needs Debian's `chromium` and `chromium-driver`; skips with a reason without them.
Screenshots of every page go to $REKINDLE_SCREENSHOTS when set, else to tmp_path.
"""

from __future__ import annotations

import base64
import os
import re
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from clirun import SCRIPT, listed
from mailserver import MailServer, free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MISSING = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]

pytestmark = pytest.mark.skipif(
    bool(MISSING),
    reason=f"no headless browser: {', '.join(MISSING)} missing "
    "(apt-get install chromium chromium-driver)",
)

EMAIL = "mika@example.org"
ZONE = "Asia/Tokyo"  # the browser's zone; the server's default is UTC
# 18:30 in Tokyo: lesson 1 is due at the next window, Tuesday 09:00 local time.
NOW = "2026-03-02T09:30:00+00:00"
FIRST_LESSON = "Tuesday 3 March at 09:00 (Asia/Tokyo time)"


def wait_until(check, what: str, attempts: int = 200):
    """Poll `check()` until it returns something truthy (at most `attempts` tries)."""
    for _ in range(attempts):
        found = check()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def web(
    env: dict[str, str], smtp_server: MailServer, tmp_path: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """`rekindle-mail serve` in a subprocess on a free loopback port, mail to `smtp_server`."""
    if SCRIPT is None:
        pytest.fail("the rekindle-mail console script is not installed (pip install .)")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server_env = {
        **env,
        "REKINDLE_SMTP_URL": smtp_server.url,
        "REKINDLE_BASE_URL": base,
        "REKINDLE_NOW": NOW,
    }
    log = tmp_path / "serve.log"
    with log.open("w") as out:  # a file, not a pipe: a chatty server never blocks on it
        proc = subprocess.Popen(
            [SCRIPT, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=server_env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"serve exited with {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as answer:  # noqa: S310
                return answer.status == 200
        except OSError:
            return False

    try:
        wait_until(healthy, "/healthz")
        yield base, server_env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[object]:
    """Headless Chromium through chromedriver; Selenium Manager never downloads anything."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1000,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: $REKINDLE_SCREENSHOTS if set, else a folder in tmp_path."""
    folder = Path(os.environ.get("REKINDLE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(driver, folder: Path, name: str) -> Path:
    """A full-page PNG of the current page, checked to be a real, non-blank picture."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path = folder / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 300 and height >= 400, f"{path} is only {width}x{height}"
    assert len(data) > 10_000, f"{path} is only {len(data)} bytes: a blank page?"
    return path


def console_errors(driver) -> list[str]:
    """Severe console entries since the last call (CSP violations, script errors, 4xx loads)."""
    get_log = getattr(driver, "get_log", None)
    if get_log is None:
        return []
    return [entry["message"] for entry in get_log("browser") if entry.get("level") == "SEVERE"]


def status(env: dict[str, str]) -> dict:
    """The subscriber's row from `subscribers list --json`."""
    return listed(env)[EMAIL]


def test_sign_up_confirm_and_unsubscribe_in_chromium(web, driver, smtp_server, shots):
    """A person signs up, confirms with the button and unsubscribes in Chromium, zone from it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base, env = web
    errors: list[str] = []

    # The landing page: the script picks the browser's zone over the server's UTC default.
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": ZONE})
    driver.get(f"{base}/")
    assert driver.execute_script("return Intl.DateTimeFormat().resolvedOptions().timeZone") == ZONE
    zone_select = Select(driver.find_element(By.ID, "timezone"))
    assert zone_select.first_selected_option.get_attribute("value") == ZONE
    assert "Rekindle" in driver.title
    screenshot(driver, shots, "1-landing")
    phone = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", phone)
    screenshot(driver, shots, "1-landing-phone")
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    errors += console_errors(driver)

    driver.find_element(By.ID, "email").send_keys(EMAIL)
    driver.find_element(By.ID, "name").send_keys("Mika")
    driver.find_element(By.CSS_SELECTOR, "#signup button[type=submit]").click()
    wait_until(lambda: "Check your inbox" in driver.page_source, "the check-inbox page")
    assert driver.current_url == f"{base}/subscribe"
    screenshot(driver, shots, "2-check-inbox")
    errors += console_errors(driver)

    # The courier stores the sign-up in the background (README, "People joining and
    # leaving on their own").
    row = wait_until(lambda: listed(env).get(EMAIL), "the stored sign-up")
    assert (row["status"], row["name"], row["timezone"]) == ("pending", "Mika", ZONE)
    confirm = wait_until(lambda: smtp_server.to(EMAIL), "the confirmation email")
    assert smtp_server.keys(EMAIL) == ["confirm"]
    text = confirm[0].message.get_body(("plain",)).get_content()
    link = re.search(rf"{re.escape(base)}/confirm/[^\s>]+", text)
    assert link, text

    # The confirmation link from the email shows a button and changes nothing by itself.
    driver.get(link.group(0))
    confirm_button = driver.find_element(By.CSS_SELECTOR, "#confirm button[type=submit]")
    screenshot(driver, shots, "3-confirm-button")
    errors += console_errors(driver)
    assert status(env)["status"] == "pending"
    assert smtp_server.keys(EMAIL) == ["confirm"]

    # The button: active, lesson 1 announced in the browser's zone.
    confirm_button.click()
    wait_until(lambda: "You’re in" in driver.page_source, "the confirmation page")
    assert FIRST_LESSON in driver.find_element(By.TAG_NAME, "main").text
    screenshot(driver, shots, "3-confirmed")
    errors += console_errors(driver)
    assert status(env)["status"] == "active"
    wait_until(lambda: len(smtp_server.to(EMAIL)) == 2, "the welcome email")
    assert smtp_server.keys(EMAIL) == ["confirm", "welcome"]

    # The List-Unsubscribe URL of the welcome: GET shows a button and changes nothing.
    welcome = smtp_server.to(EMAIL)[1].message
    header = str(welcome["List-Unsubscribe"])
    unsubscribe = re.search(rf"<({re.escape(base)}/unsubscribe/[^>]+)>", header)
    assert unsubscribe, header
    driver.get(unsubscribe.group(1))
    button = driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]")
    assert button.text == "Unsubscribe"
    screenshot(driver, shots, "4-unsubscribe")
    errors += console_errors(driver)
    assert status(env)["status"] == "active"

    button.click()
    wait_until(lambda: "sign up again" in driver.page_source, "the unsubscribed page")
    assert driver.find_element(By.TAG_NAME, "h1").text == "You’re unsubscribed"
    screenshot(driver, shots, "5-unsubscribed")
    errors += console_errors(driver)
    assert status(env)["status"] == "unsubscribed"
    assert smtp_server.keys(EMAIL) == ["confirm", "welcome"]

    assert errors == []
