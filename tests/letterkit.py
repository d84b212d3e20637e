"""Every kind of letter as a reader receives it, and what the letter tests read in them.

`deliver_every_kind` runs the real flow against an aiosmtpd server: a double
opt-in (confirmation), its confirming POST (welcome), six weeks of `send` runs
(lessons and reminders) and a broadcast. The helpers read the HTML as a mail
client would: inlined colours and sizes resolved through the ancestors.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from lxml import html as lxml_html

from clirun import run
from mailer.runtime import Runtime
from mailer.web import courier_of, create_app
from mailserver import MailServer, Received

BASE_URL = "https://rekindle.example.org"
READER = "ada@example.org"  # added by the operator: lessons, reminders, a broadcast
JOINER = "bea@example.org"  # signs up with double opt-in: the confirmation and the welcome
# A long name in several scripts: its encoded-words must still be at most 75 characters.
NAME = "Åsa-Katariina Øvergaard-Lindqvist Þórsdóttir Nguyễn Δημητρίου"
FIRST = "Åsa-Katariina"
ADDED = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)  # Sunday night
MONDAY = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
REPLY_TO = "Rekindle <support@example.org>"
HELP_URL = "https://help.example.net/find-support"
KINDS = (
    "confirm",
    "welcome",
    *(f"lesson-{n}" for n in range(1, 7)),
    *(f"reminder-{n}" for n in range(1, 7)),
    "broadcast-1",
)
BROADCAST = """A short note between letters, {{ first_name }}.

Thank you for reading along. If one practice has stayed with you, keep it going this week.
"""


@dataclass
class Letters:
    """The environment the letters were sent in and each kind as received."""

    env: dict[str, str]
    received: dict[str, Received]

    def message(self, key: str) -> EmailMessage:
        return self.received[key].message

    def parts(self, key: str) -> tuple[str, str]:
        """(text, html) of message `key`, decoded, with LF line ends."""
        message = self.message(key)
        text, markup = message.get_body(("plain",)), message.get_body(("html",))
        assert text is not None and markup is not None
        return _lf(str(text.get_content())), _lf(str(markup.get_content()))


def iso(instant: datetime) -> str:
    return instant.isoformat()


def ok(env: dict[str, str], *args: str) -> str:
    result = run(env, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def deliver_every_kind(folder: Path, server: MailServer) -> Letters:
    """Send every kind of message through the real flow; each kind as the server got it."""
    home = folder / "home"
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REKINDLE_")}
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        REKINDLE_DATABASE_URL=f"sqlite:///{folder / 'rekindle.db'}",
        REKINDLE_SMTP_URL=server.url,
        REKINDLE_FROM="Rekindle <hello@example.org>",
        REKINDLE_REPLY_TO=REPLY_TO,
        REKINDLE_BASE_URL=BASE_URL,
        REKINDLE_POSTAL_ADDRESS="Rekindle, 1 Example Street, Springfield",
        REKINDLE_HELP_URL=HELP_URL,
        REKINDLE_TIMEZONE="Europe/Lisbon",
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # no stray rekindle.toml
        at = {**env, "REKINDLE_NOW": iso(ADDED)}
        ok(at, "subscribers", "add", READER, "--name", NAME)
        ok(at, "subscribers", "add", JOINER, "--name", "Bea", "--double-opt-in")
        token = re.search(r"/confirm/([\w.-]+)", _text(server.to(JOINER)[0])).group(1)
        runtime = Runtime(env=at)
        app = create_app(runtime)
        try:
            answer = app.test_client().post(f"/confirm/{token}")
            assert answer.status_code == 200
            courier_of(app).wait_idle()
        finally:
            courier_of(app).close()
            runtime.close()
        for week in range(6):
            monday = MONDAY + timedelta(weeks=week)
            for when in (monday, monday + timedelta(days=3)):
                ok(env, "send", "--now", iso(when), "--json")
        note = folder / "note.md"
        note.write_text(BROADCAST, encoding="utf-8")
        later = MONDAY + timedelta(weeks=6)
        bid = ok(
            env,
            "broadcast",
            "create",
            "--subject",
            "A note from Rekindle",
            "--body",
            str(note),
            "--segment",
            "all",
        )
        ok({**env, "REKINDLE_NOW": iso(later)}, "broadcast", "send", bid.strip())
        report = json.loads(ok(env, "send", "--now", iso(later), "--json"))
        assert report["sent"] >= 1, report
    received: dict[str, Received] = {}
    for address in (READER, JOINER):
        for message in server.to(address):
            key = str(message.message["X-Rekindle-Key"])
            received.setdefault(key, message)
    assert set(KINDS) <= set(received), sorted(received)
    return Letters(env, received)


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def _text(message: Received) -> str:
    body = message.message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


# --- reading HTML as a client renders it --------------------------------------------------

DEFAULT_LINK = "#0000ee"  # what a browser paints a link that has no colour of its own
_HEX = re.compile(r"#([0-9a-f]{3}|[0-9a-f]{6})\Z")


def style_of(element: lxml_html.HtmlElement) -> dict[str, str]:
    """The element's inline style as a dict of lower-case properties."""
    found = {}
    for declaration in (element.get("style") or "").split(";"):
        name, sep, value = declaration.partition(":")
        if sep:
            found[name.strip().lower()] = value.strip().lower().removesuffix("!important").strip()
    return found


def lineage(element: lxml_html.HtmlElement) -> Iterator[lxml_html.HtmlElement]:
    """The element, then each of its ancestors."""
    node: lxml_html.HtmlElement | None = element
    while node is not None:
        yield node
        node = node.getparent()


def hidden(element: lxml_html.HtmlElement) -> bool:
    """True when the element or an ancestor is not shown (display:none, head, style, title)."""
    for node in lineage(element):
        if node.tag in ("head", "style", "title", "script"):
            return True
        if style_of(node).get("display") == "none":
            return True
    return False


def colour_of(element: lxml_html.HtmlElement) -> str:
    """The text colour a client paints: the nearest inline `color`, links their own or blue."""
    for node in lineage(element):
        colour = style_of(node).get("color")
        if colour:
            return colour
        if node.tag == "a":
            return DEFAULT_LINK
    return "#000000"


def background_of(element: lxml_html.HtmlElement) -> str:
    """The nearest inline background colour (or bgcolor attribute); white if there is none."""
    for node in lineage(element):
        style = style_of(node)
        colour = style.get("background-color") or style.get("background") or node.get("bgcolor")
        if colour:
            return colour.lower()
    return "#ffffff"


def font_px(element: lxml_html.HtmlElement) -> float:
    """The nearest inline font-size in px (16, a browser's default, if none)."""
    for node in lineage(element):
        size = style_of(node).get("font-size")
        if size:
            assert size.endswith("px"), f"font-size {size!r} is not in px"
            return float(size.removesuffix("px"))
    return 16.0


def text_elements(markup: str) -> list[tuple[lxml_html.HtmlElement, str]]:
    """Every visible run of text, with the element whose style paints it."""
    root = lxml_html.document_fromstring(markup.encode("utf-8"))
    found = []
    for element in root.iter():
        if not isinstance(element.tag, str) or hidden(element):
            continue
        if element.text and element.text.strip():
            found.append((element, element.text.strip()))
        for child in element:
            if child.tail and child.tail.strip():
                found.append((element, child.tail.strip()))
    return found


def luminance(colour: str) -> float:
    """WCAG 2 relative luminance of a #rgb or #rrggbb colour."""
    match = _HEX.match(colour.strip().lower())
    assert match, f"colour {colour!r} is not #rgb or #rrggbb"
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    channels = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(foreground: str, background: str) -> float:
    """The WCAG contrast ratio of two colours (1 to 21)."""
    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


# --- plain text ----------------------------------------------------------------------------

URL_LINE = re.compile(r"\s*<?(https?|mailto):\S+?>?[.,;:]?\s*\Z")


def long_lines(text: str, width: int) -> list[str]:
    """Lines longer than `width` that are not just a URL."""
    return [line for line in text.split("\n") if len(line) > width and not URL_LINE.match(line)]
