"""Email HTML in headless Chromium: a screenshot at a given width and whether it scrolls sideways.

Needs Debian's `chromium` and `chromium-driver` (tests skip without them). Run as a
script it sends the whole course with `test-send --all` into a fresh Maildir outbox
and photographs the messages named, as a subscriber's phone would show them:

    python tests/mailview.py docs/screenshots/after lesson-3 reminder-3 --width 390
"""

from __future__ import annotations

import argparse
import base64
import email
import email.policy
import mailbox
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MISSING = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
NO_BROWSER = (
    f"no headless browser: {', '.join(MISSING)} missing (apt-get install chromium chromium-driver)"
)
PHONE = 390
DESKTOP = 1200


@dataclass(frozen=True)
class View:
    """One page as Chromium laid it out at `width` CSS pixels."""

    name: str
    width: int
    scroll_width: int
    height: int
    screenshot: Path

    @property
    def scrolls_sideways(self) -> bool:
        """True when the page is wider than the viewport (a reader would pan left and right)."""
        return self.scroll_width > self.width


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
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
        "--hide-scrollbars",
        "--window-size=1200,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def html_part(message: EmailMessage) -> str:
    """The text/html part of a message as a subscriber's client decodes it."""
    part = message.get_body(("html",))
    assert part is not None, "the message has no HTML part"
    return str(part.get_content())


def text_part(message: EmailMessage) -> str:
    """The text/plain part of a message, decoded."""
    part = message.get_body(("plain",))
    assert part is not None, "the message has no text part"
    return str(part.get_content())


def look(driver: Any, url: str, folder: Path, name: str, width: int) -> View:
    """Open `url` at `width` CSS pixels (a phone below 600), measure it, take a full-page PNG."""
    metrics = {"width": width, "height": 844, "deviceScaleFactor": 1, "mobile": width < 600}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        driver.get(url)
        scroll_width = int(driver.execute_script("return document.scrollingElement.scrollWidth"))
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1}
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
        )
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{width}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    png_width, png_height = struct.unpack(">II", data[16:24])
    assert png_width == width and png_height >= 300, f"{path} is {png_width}x{png_height}"
    return View(name, width, scroll_width, png_height, path)


def look_at_html(driver: Any, html: str, folder: Path, name: str, width: int) -> View:
    """Write `html` next to its screenshot and look at it as a file (no server, no network)."""
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / f"{name}.html"
    page.write_text(html, encoding="utf-8")
    return look(driver, page.resolve().as_uri(), folder, name, width)


def outbox_messages(outbox: Path) -> dict[str, EmailMessage]:
    """The messages in a Maildir outbox, by their X-Rekindle-Key."""
    found: dict[str, EmailMessage] = {}
    for raw in mailbox.Maildir(outbox, create=False):
        parsed = email.message_from_bytes(raw.as_bytes(), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        found[str(parsed["X-Rekindle-Key"])] = parsed
    return found


def whole_course(workdir: Path) -> dict[str, EmailMessage]:
    """Every message of the shipped course, as `rekindle-mail test-send --all` sends it."""
    script = Path(sys.executable).parent / "rekindle-mail"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REKINDLE_")}
    env.update(
        HOME=str(workdir),
        REKINDLE_DATABASE_URL=f"sqlite:///{workdir / 'rekindle.db'}",
        REKINDLE_OUTBOX=str(workdir / "outbox"),
        REKINDLE_FROM="Rekindle <hello@example.org>",
        REKINDLE_REPLY_TO="Rekindle <support@example.org>",
        REKINDLE_BASE_URL="https://rekindle.example.org",
        REKINDLE_POSTAL_ADDRESS="Rekindle, 1 Example Street, Springfield",
        REKINDLE_NOW="2026-03-02T09:30:00+00:00",
    )
    for args in (
        ("subscribers", "add", "alex@example.org", "--name", "Alex", "--timezone", "Europe/Lisbon"),
        ("test-send", "alex@example.org", "--all"),
    ):
        subprocess.run([str(script), *args], env=env, check=True, capture_output=True)
    return outbox_messages(workdir / "outbox")


def main(argv: list[str] | None = None) -> int:
    """Photograph the named messages of the shipped course into a folder."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("keys", nargs="+", help="X-Rekindle-Key values: lesson-3, reminder-3, ...")
    parser.add_argument("--width", type=int, action="append", help=f"default {PHONE}")
    args = parser.parse_args(argv)
    if MISSING:
        print(NO_BROWSER, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        messages = whole_course(work)
        with chromium(work / "profile") as driver:
            for key in args.keys:
                for width in args.width or [PHONE]:
                    view = look_at_html(
                        driver, html_part(messages[key]), work / "pages", key, width
                    )
                    target = args.folder / view.screenshot.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(view.screenshot.read_bytes())
                    print(f"{target}: scrollWidth {view.scroll_width} at {width} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
