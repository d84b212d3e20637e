"""The lesson messages that actually reach an SMTP server after `rekindle-mail send`."""

from __future__ import annotations

import contextlib
import email
import email.policy
import json
import re
import sqlite3
import tomllib
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from clirun import run, script
from mailer.content.course import load_course
from mailer.content.message import MessageBuilder, Sender, address_header, header
from mailer.content.render import Renderer
from mailer.tokens import Tokens
from mailserver import LESSON_HEADERS, MailServer, Received

ADDED = "2026-03-01T12:00:00+00:00"  # a Sunday noon: before the first window
SEND = "2026-03-02T10:00:00+00:00"  # Monday 10:00 UTC: inside the 09:00-20:00 window
BASE_URL = "https://rekindle.example.org"
POSTAL = "Rekindle, 1 Example Street, Springfield"
MANIFEST = Path(__file__).resolve().parent.parent / "templates" / "course.toml"
LESSON_1_SENTENCE = "This is the first of six weekly letters"
# Every header a lesson carries (no Reply-To configured in these tests).
HEADERS = LESSON_HEADERS
CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")

ADA = "ada@example.org"
NAMELESS = "nameless@example.org"
ZOE = "zoe@example.org"
ZOE_NAME = "Zoë Ünal-Çelik"
EVE = "eve@example.org"
EVE_NAME = "<script>alert(1)</script> Eve"


def subject_of(week: int) -> str:
    """The subject templates/course.toml gives lesson `week`, read independently."""
    with MANIFEST.open("rb") as fh:
        return str(tomllib.load(fh)["lessons"][week - 1]["subject"])


def add(env: dict[str, str], address_: str, *options: str, now: str = ADDED) -> None:
    result = run({**env, "REKINDLE_NOW": now}, "subscribers", "add", address_, *options)
    assert result.exit_code == 0, result.output


def send(env: dict[str, str], now: str = SEND) -> dict:
    result = run(env, "send", "--now", now, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def only(server: MailServer, address_: str) -> Received:
    got = server.to(address_)
    assert len(got) == 1, [m.rcpt_tos for m in server.messages]
    return got[0]


def parts(message: EmailMessage) -> tuple[str, str]:
    """(text, html) of a received lesson, decoded."""
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


def db_path(env: dict[str, str]) -> str:
    return env["REKINDLE_DATABASE_URL"].removeprefix("sqlite:///")


def db_value(env: dict[str, str], sql: str, *params: str) -> str | int:
    with contextlib.closing(sqlite3.connect(db_path(env))) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None, sql
    return row[0]


def subscriber_id(env: dict[str, str], address_: str) -> int:
    return int(db_value(env, "SELECT id FROM subscribers WHERE email = ?", address_))


def unsubscribe_links(message: EmailMessage) -> list[str]:
    return re.findall(r"<([^>]+)>", str(message["List-Unsubscribe"]))


@pytest.fixture
def lessons(env: dict[str, str], smtp_server: MailServer) -> dict[str, Received]:
    """Lesson 1 as four subscribers received it: named, nameless, non-ASCII, hostile."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, ADA, "--name", "Ada Lovelace")
    add(env, NAMELESS)
    add(env, ZOE, "--name", ZOE_NAME)
    add(env, EVE, "--name", EVE_NAME)
    report = send(env)
    assert report["sent"] == 4, report
    return {a: only(smtp_server, a) for a in (ADA, NAMELESS, ZOE, EVE)}


class Tags(HTMLParser):
    """Collects start tags with their attributes and the text of <style> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"
        if self._in_style:
            self.styles.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles[-1] += data


def outside_media_queries(css: str) -> str:
    """The CSS with every @media block (which cannot be inlined) cut out."""
    out, depth, i = [], 0, 0
    while i < len(css):
        if depth == 0 and css.startswith("@media", i):
            i = css.index("{", i) + 1
            depth = 1
            continue
        ch = css[i]
        if depth:
            depth += {"{": 1, "}": -1}.get(ch, 0)
        else:
            out.append(ch)
        i += 1
    return "".join(out)


# --- structure ---------------------------------------------------------------------------


def test_lesson_is_multipart_alternative_with_text_then_html_in_utf8(lessons):
    """A lesson is multipart/alternative: text/plain then text/html, both declared UTF-8."""
    message = lessons[ADA].message
    assert message.get_content_type() == "multipart/alternative"
    inner = list(message.iter_parts())
    assert [p.get_content_type() for p in inner] == ["text/plain", "text/html"]
    assert [p.get_content_charset() for p in inner] == ["utf-8", "utf-8"]
    text, html = parts(message)
    assert LESSON_1_SENTENCE in text and LESSON_1_SENTENCE in html


def test_html_part_has_its_css_inlined_and_needs_no_external_resources(lessons):
    """The HTML carries its CSS in style="" attributes and loads nothing from elsewhere."""
    _, html = parts(lessons[ADA].message)
    tags = Tags()
    tags.feed(html)
    names = [t for t, _ in tags.tags]
    # Only @media rules (responsive and dark mode) and the :root color-scheme rule, which no
    # style attribute can hold, may stay in <style>.
    for css in tags.styles:
        rest = re.sub(r":root\s*\{[^{}]*color-scheme[^{}]*\}", "", outside_media_queries(css))
        assert "{" not in rest, css
    # Every class the layout styles, and the Markdown elements the stylesheet targets.
    for tag, attrs in tags.tags:
        if attrs.get("class") or tag in {"body", "h2", "ol", "li"}:
            assert attrs.get("style"), (tag, attrs)
    assert {"h2", "ol", "li", "a"} <= set(names)
    assert sum(1 for _, attrs in tags.tags if attrs.get("style")) >= 15
    assert "link" not in names
    assert "@import" not in html
    assert not re.search(r"""\bsrc\s*=\s*["']?https?:""", html, re.IGNORECASE)
    assert not re.search(r"url\(\s*[\"']?https?:", html, re.IGNORECASE)


def test_raw_message_has_crlf_lines_within_998_octets_and_parses_without_defects(lessons):
    """Every line of the raw bytes ends in CRLF, fits 998 octets, and nothing is defective."""
    for received in lessons.values():
        raw = received.data
        assert raw.endswith(b"\r\n")
        lines = raw.split(b"\r\n")[:-1]
        assert lines
        for line in lines:
            assert b"\n" not in line and b"\r" not in line, line[:80]
            assert len(line) <= 998
        message = BytesParser(policy=email.policy.default).parsebytes(raw)
        assert not message.defects
        for part in message.walk():
            assert not part.defects, part.get_content_type()
        for name, value in message.items():
            assert not value.defects, (name, value.defects)


# --- headers ------------------------------------------------------------------------------


def test_headers_name_sender_recipient_subject_date_message_id_and_key(lessons, env):
    """From, To, Subject (from course.toml), Date, Message-ID (sending domain), X-Rekindle-Key."""
    message = lessons[ADA].message
    assert {k.lower() for k in message} == HEADERS
    assert all(len(message.get_all(h) or []) == 1 for h in HEADERS)
    sender = message["From"].addresses
    assert [(a.display_name, a.addr_spec) for a in sender] == [("Rekindle", "hello@example.org")]
    to = message["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in to] == [("Ada Lovelace", ADA)]
    assert str(message["Subject"]) == subject_of(1) == "Week 1: Heal yourself first"
    assert message["Date"].datetime == datetime.fromisoformat(SEND)
    assert re.fullmatch(r"<[^<>@\s]+@example\.org>", str(message["Message-ID"]))
    assert str(message["X-Rekindle-Key"]) == "lesson-1"
    # The envelope sender is the VERP address that bounces prove themselves with.
    assert re.fullmatch(r"hello\+[a-z2-7]{20,}@example\.org", lessons[ADA].mail_from)
    assert lessons[ADA].rcpt_tos == [ADA]


def test_non_ascii_display_name_is_rfc2047_encoded_and_decodes_back(lessons):
    """A non-ASCII name goes out as RFC 2047 encoded-words and decodes to the very name."""
    raw_headers = lessons[ZOE].data.split(b"\r\n\r\n", 1)[0]
    assert raw_headers.isascii()
    to_field = re.search(rb"^To:(.*(?:\r\n[ \t].*)*)", raw_headers, re.MULTILINE)
    assert to_field is not None
    assert b"=?utf-8?" in to_field.group(1).lower()
    to = lessons[ZOE].message["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in to] == [(ZOE_NAME, ZOE)]
    text, html = parts(lessons[ZOE].message)
    assert "Hi Zoë," in text and "Hi Zoë," in html


def test_nameless_subscriber_gets_a_bare_to_address(lessons):
    """With no name the To header is the bare address (no empty quotes)."""
    to = lessons[NAMELESS].message["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in to] == [("", NAMELESS)]


def test_list_headers_offer_one_click_https_unsubscribe_under_base_url(lessons):
    """List-Id names the list; List-Unsubscribe is <base_url>/unsubscribe/<token>, one-click."""
    message = lessons[ADA].message
    assert str(message["List-Id"]) == "Rekindle <rekindle.example.org>"
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    links = unsubscribe_links(message)
    assert len(links) == 1  # no mailto: without an unsubscribe address
    url = urlsplit(links[0])
    assert url.scheme == "https" and url.netloc == "rekindle.example.org"
    assert re.fullmatch(r"/unsubscribe/[A-Za-z0-9_.\-]+", url.path)
    others = {unsubscribe_links(lessons[a].message)[0] for a in (NAMELESS, ZOE, EVE)}
    assert links[0] not in others and len(others) == 3


def test_list_unsubscribe_adds_mailto_when_an_unsubscribe_address_is_configured(env, smtp_server):
    """With REKINDLE_UNSUBSCRIBE_ADDRESS set, List-Unsubscribe offers the https URL and mailto:."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    env["REKINDLE_UNSUBSCRIBE_ADDRESS"] = "unsubscribe@example.org"
    add(env, ADA, "--name", "Ada")
    assert send(env)["sent"] == 1
    links = unsubscribe_links(only(smtp_server, ADA).message)
    assert len(links) == 2
    assert links[0].startswith(f"{BASE_URL}/unsubscribe/")
    assert re.fullmatch(r"mailto:unsubscribe@example\.org(\?.*)?", links[1])


def test_unsubscribe_token_verifies_with_the_secret_kept_in_the_database(lessons, env):
    """Without a configured secret, the link's token verifies with the secret in the meta table."""
    secret = str(db_value(env, "SELECT value FROM meta WHERE key = 'secret_key'"))
    tokens = Tokens(secret)
    for address_, received in lessons.items():
        token = unsubscribe_links(received.message)[0].rsplit("/", 1)[1]
        expected = (subscriber_id(env, address_), tokens.email_digest(address_))
        assert tokens.read_unsubscribe(token) == expected
        assert Tokens(secret + "x").read_unsubscribe(token) is None


def test_unsubscribe_token_verifies_with_the_configured_secret_key(env, smtp_server):
    """With REKINDLE_SECRET_KEY set, the token is signed with it and names the subscriber."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    env["REKINDLE_SECRET_KEY"] = "a configured secret for signing links"
    add(env, ADA, "--name", "Ada")
    assert send(env)["sent"] == 1
    link = unsubscribe_links(only(smtp_server, ADA).message)[0]
    token = link.rsplit("/", 1)[1]
    tokens = Tokens(env["REKINDLE_SECRET_KEY"])
    assert tokens.read_unsubscribe(token) == (subscriber_id(env, ADA), tokens.email_digest(ADA))


# --- personalisation ----------------------------------------------------------------------


def test_both_parts_greet_by_first_name_and_carry_week_address_and_unsubscribe_link(lessons):
    """Text and HTML both say "Hi Ada,", "Week 1 of 6", the postal address and the link."""
    message = lessons[ADA].message
    link = unsubscribe_links(message)[0]
    for part in parts(message):
        assert "Hi Ada," in part
        assert "Lovelace" not in part
        assert "Week 1 of 6" in part
        assert POSTAL in part
        assert link in part
    _, html = parts(message)
    assert f'href="{link}"' in html


def test_subscriber_without_a_name_is_greeted_with_the_fallback(lessons):
    """No name: both parts say "Hi friend," (the manifest's name_fallback)."""
    for part in parts(lessons[NAMELESS].message):
        assert "Hi friend," in part
        assert "Hi ," not in part


def test_hostile_name_is_html_escaped_in_the_html_part(lessons):
    """A name with markup is escaped in the HTML (no live <script>) and kept as text."""
    text, html = parts(lessons[EVE].message)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Hi <script>alert(1)</script>," in text
    to = lessons[EVE].message["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in to] == [(EVE_NAME, EVE)]


# --- header injection ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Ada\r\nBcc: victim@example.org", "Ada\nX-Evil: 1", "Ada\rEve"])
def test_cli_rejects_a_name_with_a_line_break(env, name):
    """`subscribers add --name` with CR/LF exits 1 with one clear line, storing nothing."""
    result = script({**env, "REKINDLE_NOW": ADDED}, "subscribers", "add", ADA, "--name", name)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "name" in lines[0].lower()
    listed = run(env, "subscribers", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == []


SENDER = Sender(
    from_header="Rekindle <hello@example.org>",
    address="hello@example.org",
    domain="example.org",
    list_id="Rekindle <rekindle.example.org>",
)
_CONTENT = []


def lesson_content():
    """Lesson 1 rendered once for the whole module (rendering is the slow part)."""
    if not _CONTENT:
        _CONTENT.append(Renderer(load_course(), postal_address=POSTAL).lesson(1))
    return _CONTENT[0]


def cleaned(value: str) -> str:
    """What a value may legitimately become in a header: controls dropped, spaces collapsed."""
    return " ".join(CONTROL.sub(" ", value).split())


def field(raw: bytes, name: str) -> str:
    """The raw (still folded) value of header `name` in a message's bytes."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    folded = r"[^\r\n]*(?:\r\n[ \t][^\r\n]*)*"
    found = re.search(rf"^{name}: ?({folded})", head, re.MULTILINE | re.IGNORECASE)
    assert found is not None, name
    return found.group(1)


def shown(value: str) -> tuple[str, str]:
    """(display name, address) of a raw address field, as a reader following RFC 2047 shows it.

    The white space between two adjacent encoded-words is not text (RFC 2047 §6.2).
    Python's policy.default parser keeps it as a space in a display name (CPython
    gh-128110), so the name is decoded with email.header, which follows the RFC.
    """
    phrase, addr = parseaddr(re.sub(r"\r\n([ \t])", r"\1", value))
    return str(make_header(decode_header(phrase))), addr


ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?[^?\s]*\?=")


def assert_clean_headers(raw: bytes, expected: set[str]) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert {k.lower() for k in message} == expected
    for name, value in message.items():
        assert "\r" not in str(value) and "\n" not in str(value), name
    head = raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    for line in head.split(b"\r\n")[:-1]:
        assert len(line) <= 998
        assert b"\n" not in line and b"\r" not in line
    return message  # type: ignore[return-value]


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=100), subject=st.text(min_size=1, max_size=300))
@example(name="Ada\r\nBcc: victim@example.org", subject="Week 1\r\nBcc: victim@example.org")
@example(name="Zoë\u2028X-Evil: 1", subject="Wöche 1\nX-Evil: 1")
def test_builder_never_lets_a_name_or_subject_add_a_header(name, subject):
    """For any name and subject, the built message has exactly the expected headers, unbroken."""
    builder = MessageBuilder(SENDER, "lesson-1", subject, lesson_content())
    message = builder.build(
        email=ADA,
        name=name,
        first_name=name.split()[0] if name.split() else "friend",
        message_id="<lesson-1.0123456789abcdef@example.org>",
        unsubscribe_url=f"{BASE_URL}/unsubscribe/1.abc",
        date=datetime(2026, 3, 2, 10, tzinfo=UTC),
    )
    parsed = assert_clean_headers(message.data, HEADERS)
    assert " ".join(str(parsed["Subject"]).split()) == cleaned(subject)
    assert [a.addr_spec for a in parsed["To"].addresses] == [ADA]
    display, addr = shown(field(message.data, "To"))
    assert (" ".join(display.split()), addr) == (cleaned(name), ADA)
    assert str(parsed["X-Rekindle-Key"]) == "lesson-1"


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=100), value=st.text(max_size=300))
def test_header_and_address_never_break_the_line(name, value):
    """header() and address_header() give one field each, whatever text they are handed."""
    raw = header("Subject", value) + address_header("To", name, ADA) + b"\r\nbody\r\n"
    parsed = assert_clean_headers(raw, {"subject", "to"})
    assert " ".join(str(parsed["Subject"]).split()) == cleaned(value)
    assert [a.addr_spec for a in parsed["To"].addresses] == [ADA]


# Letters outside ASCII (accents, scripts, emoji), joiners, and plain ASCII between them.
NAME_TEXT = st.characters(
    blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp"), whitelist_characters="\u200c\u200d"
)
long_names = (
    st.text(alphabet=NAME_TEXT, min_size=30, max_size=100)
    .map(str.strip)
    .filter(lambda t: len(t) >= 20 and not t.isascii())
)


def assert_short_encoded_words(raw: bytes, *names: str) -> None:
    """In fields `names`: encoded-words of at most 75 characters (RFC 2047 §2), lines of 78."""
    for name in names:
        lines = f"{name}: {field(raw, name)}".split("\r\n")
        words = ENCODED_WORD.findall("\r\n".join(lines))
        assert words and all(len(w) <= 75 for w in words), [len(w) for w in words]
        assert all(len(line) <= 78 for line in lines), lines


@settings(max_examples=200, deadline=None)
@given(name=long_names, subject=long_names)
@example(name="Zoë Ünal-Çelik " * 5 + "Øster", subject="Wöche 1: " + "Schön " * 20)
@example(name=" ".join(["\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"] * 8), subject="李" * 90)
@example(name="\U0001f469\u200d\U0001f469\u200d\U0001f467" * 12, subject="🙂" * 60)
def test_long_non_ascii_names_and_subjects_become_encoded_words_of_at_most_75(name, subject):
    """Long non-ASCII names and subjects: words of at most 75, lines of 78, decoding is exact."""
    builder = MessageBuilder(SENDER, "lesson-1", subject, lesson_content())
    message = builder.build(
        email=ADA,
        name=name,
        first_name="friend",
        message_id="<lesson-1.0123456789abcdef@example.org>",
        unsubscribe_url=f"{BASE_URL}/unsubscribe/1.abc",
        date=datetime(2026, 3, 2, 10, tzinfo=UTC),
    )
    assert_short_encoded_words(message.data, "To", "Subject")
    parsed = assert_clean_headers(message.data, HEADERS)
    assert str(parsed["Subject"]) == subject
    assert shown(field(message.data, "To")) == (name, ADA)


LITERAL_WORDS = [
    "=?utf-8?b?SGFja2Vy?=",
    "=?iso-8859-1?q?Ad=E9le?=",
    "Ann =?utf-8?q?Eve?= Lee",
    "=?UTF-8?B?" + "QWRh" * 30 + "?=",
]


@pytest.mark.parametrize("name", LITERAL_WORDS)
def test_a_name_that_looks_like_an_encoded_word_is_shown_literally(name):
    """A name spelled like an RFC 2047 encoded-word is encoded, so readers show it as typed."""
    builder = MessageBuilder(SENDER, "lesson-1", name, lesson_content())
    message = builder.build(
        email=ADA,
        name=name,
        first_name="friend",
        message_id="<lesson-1.0123456789abcdef@example.org>",
        unsubscribe_url=f"{BASE_URL}/unsubscribe/1.abc",
        date=datetime(2026, 3, 2, 10, tzinfo=UTC),
    )
    parsed = assert_clean_headers(message.data, HEADERS)
    assert str(parsed["Subject"]) == name
    assert shown(field(message.data, "To")) == (name, ADA)
    if len(name) < 40:  # one encoded-word: Python's parser reads it right too (gh-128110)
        assert [(a.display_name, a.addr_spec) for a in parsed["To"].addresses] == [(name, ADA)]


def test_names_that_look_like_encoded_words_or_run_long_arrive_as_stored(env, smtp_server):
    """Through `send` and SMTP: literal '=?...?=' names display as typed; long ones split."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    long_name = ("Zoë Ünal-Çelik " * 5).strip()
    people = {f"p{i}@example.org": n for i, n in enumerate([*LITERAL_WORDS[:3], long_name])}
    for address_, name in people.items():
        add(env, address_, "--name", name)
    assert send(env)["sent"] == len(people)
    for address_, name in people.items():
        received = only(smtp_server, address_)
        assert shown(field(received.data, "To")) == (name, address_)
        to = received.message["To"].addresses
        if name != long_name:
            assert [(a.display_name, a.addr_spec) for a in to] == [(name, address_)]
    assert_short_encoded_words(only(smtp_server, "p3@example.org").data, "To")


def test_a_configured_from_written_as_encoded_words_keeps_its_meaning():
    """A `from` setting already in RFC 2047 form is shown decoded, not as literal '=?...?='."""
    sender = Sender(
        from_header="=?utf-8?q?Caf=C3=A9_Rekindle?= <hello@example.org>",
        address="hello@example.org",
        domain="example.org",
        list_id="Rekindle <rekindle.example.org>",
    )
    message = MessageBuilder(sender, "lesson-1", "Week 1", lesson_content()).build(
        email=ADA,
        name=None,
        first_name="friend",
        message_id="<lesson-1.0123456789abcdef@example.org>",
        unsubscribe_url=f"{BASE_URL}/unsubscribe/1.abc",
        date=datetime(2026, 3, 2, 10, tzinfo=UTC),
    )
    parsed = assert_clean_headers(message.data, HEADERS)
    sender_shown = [(a.display_name, a.addr_spec) for a in parsed["From"].addresses]
    assert sender_shown == [("Café Rekindle", "hello@example.org")]


def test_long_display_name_is_folded_without_changing_it():
    """A long name with " <" in it reaches the To header exactly (folding must not add spaces)."""
    name = "Ann <3 Bob, with a name long enough to need folding"
    raw = address_header("To", name, ADA) + b"\r\nbody\r\n"
    parsed = assert_clean_headers(raw, {"to"})
    assert [(a.display_name, a.addr_spec) for a in parsed["To"].addresses] == [(name, ADA)]


def test_long_subject_is_folded_within_998_octets():
    """A very long subject (manifests allow one) is folded: no header line passes 998 octets."""
    subject = "Week 1: " + " ".join(["rekindle"] * 150)  # about 1,350 ASCII characters
    builder = MessageBuilder(SENDER, "lesson-1", subject, lesson_content())
    message = builder.build(
        email=ADA,
        name="Ada",
        first_name="Ada",
        message_id="<lesson-1.0123456789abcdef@example.org>",
        unsubscribe_url=f"{BASE_URL}/unsubscribe/1.abc",
        date=datetime(2026, 3, 2, 10, tzinfo=UTC),
    )
    parsed = assert_clean_headers(message.data, HEADERS)
    assert " ".join(str(parsed["Subject"]).split()) == subject


def test_non_ascii_address_keeps_a_parseable_to_header(env):
    """An SMTPUTF8 recipient's To header still holds their address (not an encoded-word blob)."""
    server = MailServer(enable_SMTPUTF8=True).start()
    try:
        env["REKINDLE_SMTP_URL"] = server.url
        add(env, "zoë@example.org", "--name", "Zoë")
        assert send(env)["sent"] == 1
        (received,) = server.messages
    finally:
        server.stop()
    # RFC 6532: the header is raw UTF-8, which the bytes parser would read as ASCII.
    assert 'To: "Zoë" <zoë@example.org>'.encode() in received.data
    message = email.message_from_string(received.data.decode(), policy=email.policy.SMTPUTF8)
    to = message["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in to] == [("Zoë", "zoë@example.org")]


# --- Message-ID ---------------------------------------------------------------------------


def test_retry_carries_the_same_message_id_and_other_messages_do_not(env, smtp_server, monkeypatch):
    """A retried lesson keeps its Message-ID; another subscriber's or lesson's differs."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    attempts: list[bytes] = []  # every DATA the server saw, accepted or not
    handle_data = smtp_server.handler.handle_DATA

    async def observe(server, session, envelope):
        attempts.append(envelope.original_content)
        return await handle_data(server, session, envelope)

    monkeypatch.setattr(smtp_server.handler, "handle_DATA", observe)
    add(env, ADA, "--name", "Ada")
    add(env, "bob@example.org", "--name", "Bob")
    smtp_server.script.data = ["451 4.3.0 try later"]

    first = send(env)
    assert (first["sent"], first["deferred"]) == (1, 1), first
    refused = email.message_from_bytes(attempts[0], policy=email.policy.default)
    assert str(refused["To"]).endswith(f"<{ADA}>")
    assert smtp_server.keys(ADA) == []

    assert send(env, "2026-03-02T10:01:00+00:00")["sent"] == 0  # backoff: not yet
    second = send(env, "2026-03-02T10:05:00+00:00")
    assert second["sent"] == 1, second
    retried = only(smtp_server, ADA).message
    assert str(retried["Message-ID"]) == str(refused["Message-ID"])
    assert str(retried["X-Rekindle-Key"]) == "lesson-1"

    bob = only(smtp_server, "bob@example.org").message
    assert str(bob["Message-ID"]) != str(retried["Message-ID"])

    assert send(env, "2026-03-09T10:00:00+00:00")["sent"] == 2
    week2 = [m.message for m in smtp_server.to(ADA)]
    assert [str(m["X-Rekindle-Key"]) for m in week2] == ["lesson-1", "lesson-2"]
    ids = {str(m["Message-ID"]) for m in [*week2, bob]}
    assert len(ids) == 3


# --- preview ------------------------------------------------------------------------------


def test_preview_shows_the_lesson_as_html_and_as_text(env):
    """`preview 1` prints lesson 1's HTML; `--text` prints the same lesson as plain text."""
    html = run(env, "preview", "1")
    assert html.exit_code == 0, html.output
    assert LESSON_1_SENTENCE in html.stdout
    assert "<html" in html.stdout.lower() and "Week 1 of 6" in html.stdout
    text = run(env, "preview", "1", "--text")
    assert text.exit_code == 0, text.output
    assert LESSON_1_SENTENCE in text.stdout
    assert "Week 1 of 6" in text.stdout
    assert "<p" not in text.stdout and "<html" not in text.stdout.lower()
    week3 = run(env, "preview", "3", "--text")
    assert week3.exit_code == 0, week3.output
    assert LESSON_1_SENTENCE not in week3.stdout and "Week 3 of 6" in week3.stdout
