"""Every kind of letter, and the web pages, in headless Chromium at 390 px and 1200 px (issue 13).

Needs Debian's `chromium` and `chromium-driver`; skips with a reason without them.
Screenshots are kept as artefacts in $REKINDLE_SCREENSHOTS, else in tests/artifacts/
(ignored by git); each test prints where.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clirun import run
from letterkit import BASE_URL, KINDS, Letters, contrast, deliver_every_kind
from mailserver import MailServer
from mailview import DESKTOP, MISSING, NO_BROWSER, PHONE, chromium, html_part, look, look_at_html
from webserve import serving

pytestmark = pytest.mark.skipif(bool(MISSING), reason=NO_BROWSER)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# Every element that holds text of its own, with the colours Chromium computed for it
# and the first opaque background behind it.
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
  if (style.visibility === 'hidden' || style.display === 'none' || style.opacity === '0') continue;
  out.push([el.textContent.trim().slice(0, 40), style.color, opaque(el)]);
}
return out;
"""


def hex_of(rgb: str) -> str:
    """'rgb(47, 42, 38)' -> '#2f2a26'."""
    numbers = [int(n) for n in re.findall(r"\d+", rgb)[:3]]
    return "#" + "".join(f"{n:02x}" for n in numbers)


@pytest.fixture(scope="module")
def letters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Letters, MailServer]]:
    """Every kind of message, sent once for the whole module; the server stays up."""
    server = MailServer().start()
    try:
        yield deliver_every_kind(tmp_path_factory.mktemp("letters"), server), server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shots() -> Path:
    """Where screenshots are kept: $REKINDLE_SCREENSHOTS, else tests/artifacts/letters."""
    folder = Path(os.environ.get("REKINDLE_SCREENSHOTS") or ARTIFACTS / "letters")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {folder}")
    return folder


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as browser:
        yield browser


def scheme(driver: Any, name: str) -> None:
    """Make the page see prefers-color-scheme: `name`."""
    features = [{"name": "prefers-color-scheme", "value": name}]
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": features})


@pytest.mark.parametrize("key", KINDS)
def test_each_letter_fits_a_phone_and_a_desktop_without_sideways_scrolling(
    letters, driver, shots, key
):
    """At 390 px and 1200 px no letter is wider than the window; screenshots are kept."""
    received, _ = letters
    markup = html_part(received.message(key))
    for width in (PHONE, DESKTOP):
        view = look_at_html(driver, markup, shots, key, width)
        assert not view.scrolls_sideways, (key, width, view.scroll_width)
        assert view.height >= 400, view
    assert (shots / f"{key}-{PHONE}.png").stat().st_size > 10_000


@pytest.mark.parametrize("palette", ["light", "dark"])
@pytest.mark.parametrize("key", ["confirm", "welcome", "lesson-3", "lesson-6", "reminder-3"])
def test_text_stays_readable_in_light_and_dark_mode_as_chromium_paints_it(
    letters, driver, shots, key, palette
):
    """Chromium's computed colours: every text at least 4.5:1 in the light and the dark palette."""
    received, _ = letters
    scheme(driver, palette)
    try:
        look_at_html(driver, html_part(received.message(key)), shots, f"{key}-{palette}", PHONE)
        painted = driver.execute_script(PAINTED)
        body = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    finally:
        scheme(driver, "")
    assert len(painted) > 8
    low = [
        (text, hex_of(fg), hex_of(bg), round(contrast(hex_of(fg), hex_of(bg)), 2))
        for text, fg, bg in painted
        if contrast(hex_of(fg), hex_of(bg)) < 4.5
    ]
    assert low == []
    assert (hex_of(body) == "#161413") == (palette == "dark")


def test_web_pages_fit_a_phone_without_sideways_scrolling(letters, driver, shots, tmp_path):
    """The sign-up form, a confirm page, a letter and the privacy page fit 390 px."""
    received, server = letters
    env = {**received.env, "REKINDLE_SMTP_URL": server.url}
    done = run(
        {**env, "REKINDLE_NOW": "2026-04-20T10:00:00+00:00"},
        "subscribers",
        "add",
        "cal@example.org",
        "--double-opt-in",
    )
    assert done.exit_code == 0, done.output
    confirmation = server.to("cal@example.org")[0].message.get_body(("plain",)).get_content()
    confirm = re.search(re.escape(BASE_URL) + r"(/confirm/\S+)", confirmation).group(1)
    text = received.message("lesson-3").get_body(("plain",)).get_content()
    letter = re.search(re.escape(BASE_URL) + r"(/letters/\S+)", text).group(1)
    with serving(env, tmp_path / "serve.log") as web:
        for name, path, expect in (
            ("page-index", "/", "Start the six weeks"),
            ("page-confirm", confirm, "Yes, start my six weeks"),
            ("page-letter", letter, "Hi Åsa-Katariina,"),
            ("page-privacy", "/privacy", "What we keep"),
        ):
            view = look(driver, web.root + path, shots, name, PHONE)
            assert expect in driver.page_source, name
            assert not view.scrolls_sideways, (name, view.scroll_width)
