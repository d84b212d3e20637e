"""The course page in headless Chromium against `rekindle-mail serve` (issue 14).

A reader opens the "Manage your course" link of their first letter and uses every
control with the mouse and keyboard; each change is checked with `subscribers list
--json` and by what `send` runs at the computed instants deliver to the aiosmtpd
server. The page at 390 px is kept as a screenshot in $REKINDLE_SCREENSHOTS, else in
tests/artifacts/course/ (docs/screenshots/course-page.png is one of these).

Needs Debian's `chromium` and `chromium-driver`; skips with a reason without them.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from clirun import listed, run, send
from letterkit import contrast
from mailserver import MailServer
from mailview import MISSING, NO_BROWSER, PHONE, chromium, look
from webserve import Served, serving

pytestmark = pytest.mark.skipif(bool(MISSING), reason=NO_BROWSER)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
BASE_URL = "https://rekindle.example.org"
ADA = "ada@example.org"
ADDED = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)  # Sunday night; lesson 1 Monday 09:00 London
T = TypeVar("T")
# Every element with text of its own: its colour and the first opaque background behind it.
PAINTED = """
const out = [];
const opaque = (el) => {
  for (let node = el; node; node = node.parentElement) {
    const bg = getComputedStyle(node).backgroundColor;
    if (bg && bg !== 'transparent' && !bg.endsWith(', 0)')) return bg;
  }
  return 'rgb(255, 255, 255)';
};
for (const el of document.body.querySelectorAll('*')) {
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (!own || !el.getClientRects().length) continue;
  const style = getComputedStyle(el);
  if (style.visibility === 'hidden' || style.display === 'none') continue;
  out.push([el.textContent.trim().slice(0, 40), style.color, opaque(el)]);
}
return out;
"""


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def wait_until(check: Callable[[], T], what: str) -> T:
    for _ in range(200):
        found = check()
        if found:
            return found
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def hex_of(rgb: str) -> str:
    return "#" + "".join(f"{int(n):02x}" for n in re.findall(r"\d+", rgb)[:3])


@pytest.fixture
def shots() -> Path:
    folder = Path(os.environ.get("REKINDLE_SCREENSHOTS") or ARTIFACTS / "course")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {folder}")
    return folder


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "chromium-profile") as browser:
        yield browser


@pytest.fixture
def reader(env: dict[str, str], smtp_server: MailServer) -> tuple[dict[str, str], str]:
    """Ada (Europe/London) has lesson 1; the path of her "Manage your course" link."""
    env.update(REKINDLE_SMTP_URL=smtp_server.url, REKINDLE_BASE_URL=BASE_URL)
    at = {**env, "REKINDLE_NOW": ADDED.isoformat()}
    added = run(at, "subscribers", "add", ADA, "--name", "Ada", "--timezone", "Europe/London")
    assert added.exit_code == 0, added.output
    send(env, utc(3, 2, 9))
    text = smtp_server.to(ADA)[0].message.get_body(("plain",)).get_content()
    link = re.search(re.escape(BASE_URL) + r"(/course/[A-Za-z0-9_-]+)", text)
    assert link, text
    return env, link.group(1)


def press(driver: Any, button: str, done: str) -> None:
    """Click a control's button; the page that comes back confirms it.

    The old page must be gone first: its own text may hold `done` (the paused page's
    "Welcome back" heading), and reading the database before the POST is answered races it.
    """
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    old = driver.find_element(By.TAG_NAME, "html")

    def replaced() -> bool:
        try:
            old.is_enabled()
        except StaleElementReferenceException:
            return True
        return False

    driver.find_element(By.ID, button).click()
    wait_until(replaced, f"a new page after {button}")
    wait_until(lambda: done in driver.page_source, f"the page after {button}")


def standing(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, "standing").text)


def due(env: dict[str, str]) -> str | None:
    return listed(env)[ADA]["next_due"]


def lessons_after(env: dict[str, str], server: MailServer, when: datetime) -> list[str]:
    """Run `send` at `when`; the lessons Ada has had by then."""
    send(env, when)
    return server.lessons(ADA)


def opened(driver: Any, web: Served, link: str) -> None:
    driver.get(web.root + link)
    wait_until(lambda: "Your course" in driver.page_source, "the course page")


def test_a_reader_sets_their_own_pace_in_chromium(reader, smtp_server, driver, shots, tmp_path):
    """Reminders off, a week off, evenings, the browser's zone (searched for), pause and
    one-click resume, the next letter now, then erase: each checked in `subscribers list
    --json` and by the lessons `send` delivers at the instants they name."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    env, link = reader
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Asia/Tokyo"})

    # Tuesday 3 March, 10:00Z: lesson 2 is due Monday 9 March, 09:00 London.
    with serving(
        {**env, "REKINDLE_NOW": utc(3, 3, 10).isoformat()}, tmp_path / "serve-a.log"
    ) as web:
        view = look(driver, web.root + link, shots, "course-page", PHONE)
        assert not view.scrolls_sideways, view
        assert standing(driver) == (
            "You have read 1 of 6 letters; letter 2, Stay committed, "
            "comes on Monday 9 March at 09:00 your time."
        )
        painted = driver.execute_script(PAINTED)
        low = [
            (text, hex_of(fg), hex_of(bg))
            for text, fg, bg in painted
            if contrast(hex_of(fg), hex_of(bg)) < 4.5
        ]
        assert len(painted) > 20 and low == []

        opened(driver, web, link)
        press(driver, "reminders", "no more mid-week reminders")
        assert listed(env)[ADA]["reminders"] is False
        press(driver, "week-off", "comes a week later")
        assert due(env) == "2026-03-16T09:00:00+00:00"
        assert "comes on Monday 16 March at 09:00 your time" in standing(driver)
        driver.find_element(By.CSS_SELECTOR, "input[name=time_of_day][value=evening]").click()
        press(driver, "save-time-of-day", "new time of day")
        assert due(env) == "2026-03-16T18:00:00+00:00"
        # The zone list is preselected from the browser (Tokyo); searching narrows it.
        zones = Select(driver.find_element(By.ID, "timezone"))
        assert zones.first_selected_option.get_attribute("value") == "Asia/Tokyo"
        driver.find_element(By.ID, "zone-search").send_keys("tokyo")
        shown = driver.execute_script(
            "return [...document.getElementById('timezone').options]"
            ".filter(o => !o.hidden).map(o => o.value)"
        )
        assert shown == ["Asia/Tokyo"]
        press(driver, "save-timezone", "new time zone")
        assert due(env) == "2026-03-16T18:00:00+09:00"
        assert "Asia/Tokyo time" in driver.find_element(By.ID, "when").text

    assert lessons_after(env, smtp_server, utc(3, 5, 9)) == ["lesson-1"]  # no reminder 1
    assert smtp_server.keys(ADA) == ["lesson-1"]
    assert lessons_after(env, smtp_server, utc(3, 9, 9)) == ["lesson-1"]  # the week off
    assert lessons_after(env, smtp_server, utc(3, 16, 8, 59)) == ["lesson-1"]
    assert lessons_after(env, smtp_server, utc(3, 16, 9)) == ["lesson-1", "lesson-2"]

    # Wednesday 18 March: lesson 3 is due Monday 23 March, 18:00 Tokyo. Pause.
    with serving(
        {**env, "REKINDLE_NOW": utc(3, 18, 10).isoformat()}, tmp_path / "serve-b.log"
    ) as web:
        opened(driver, web, link)
        press(driver, "pause", "your course is paused")
        assert listed(env)[ADA]["status"] == "paused"
        assert driver.find_elements(By.ID, "week-off") == []
    assert lessons_after(env, smtp_server, utc(3, 23, 9, 30)) == ["lesson-1", "lesson-2"]

    # Tuesday 24 March, 19:00 in Tokyo: resume (next evening: Wednesday), then "now".
    now = utc(3, 24, 10)
    with serving({**env, "REKINDLE_NOW": now.isoformat()}, tmp_path / "serve-c.log") as web:
        opened(driver, web, link)
        press(driver, "resume", "Welcome back: your course goes on.")
        assert due(env) == "2026-03-25T18:00:00+09:00"
        press(driver, "next-now", "goes out with our next delivery")
        assert due(env) == "2026-03-24T19:00:00+09:00"  # due at once
        assert "is on its way" in standing(driver)
    expected = ["lesson-1", "lesson-2", "lesson-3"]
    assert lessons_after(env, smtp_server, now + timedelta(minutes=1)) == expected
    assert due(env) == "2026-03-31T18:00:00+09:00"  # the course goes on a week after it
    assert lessons_after(env, smtp_server, utc(3, 31, 8, 59)) == expected
    assert lessons_after(env, smtp_server, utc(3, 31, 9)) == [*expected, "lesson-4"]

    # Erase: a second, confirming press; one goodbye; the link is gone.
    with serving(
        {**env, "REKINDLE_NOW": utc(4, 1, 10).isoformat()}, tmp_path / "serve-d.log"
    ) as web:
        opened(driver, web, link)
        press(driver, "erase", "Erase everything?")
        assert ADA in listed(env)
        press(driver, "erase-confirm", "Your data has been erased")
        wait_until(lambda: "erased" in smtp_server.keys(ADA), "the goodbye")
        driver.get(web.root + link)
        assert "isn’t available" in driver.page_source
    assert ADA not in listed(env)
    assert smtp_server.keys(ADA).count("erased") == 1
