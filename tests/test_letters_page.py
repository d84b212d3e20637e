"""The letters page and the privacy page of `serve` (issue 13): as readers and attackers use them.

Most tests drive the Flask app on a real SQLite file with a real aiosmtpd server
(as tests/test_web.py does); one runs against `rekindle-mail serve` on loopback.
The letter links come from lessons and reminders really sent by `send`.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from flask.testing import FlaskClient

from clirun import add, run
from mailer.runtime import Runtime
from mailer.store import db
from mailer.tokens import Tokens
from mailer.web import courier_of, create_app
from webserve import serving

BASE_URL = "https://rekindle.example.org"
ADA, BEA, CAL = "ada@example.org", "bea@example.org", "cal@example.org"
ADDED = "2026-03-01T22:00:00+00:00"  # Sunday night: lesson 1 at Monday's window
MONDAY = datetime(2026, 3, 2, 10, tzinfo=UTC)
LESSON_1_SENTENCE = "it starts somewhere you might not expect"
LETTER = re.compile(re.escape(BASE_URL) + r"(/letters/[A-Za-z0-9_-]+)")
ROBOTS = '<meta name="robots" content="noindex, nofollow">'


@contextmanager
def app_client(env: dict[str, str]) -> Iterator[FlaskClient]:
    """A test client for create_app(Runtime(env=env)); worker and database closed afterwards."""
    runtime = Runtime(config_path=None, env=env)
    app = create_app(runtime)
    try:
        yield app.test_client()
    finally:
        courier_of(app).close()
        runtime.close()


def send(env: dict[str, str], when: datetime) -> None:
    result = run(env, "send", "--now", when.isoformat(), "--json")
    assert result.exit_code == 0, result.output


@pytest.fixture
def mailed(env, smtp_server) -> dict[str, str]:
    """Ada and Bea have lesson 1 and its reminder; env points at the SMTP server."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    add(env, ADA, "--name", "Ada Lovelace", now=ADDED)
    add(env, BEA, "--name", "Bea", now=ADDED)
    send(env, MONDAY)
    send(env, MONDAY + timedelta(days=3))
    return env


def letter_link(smtp_server, address: str, key: str) -> str:
    """The path of the letters-page link in `address`'s message `key` (same in both parts)."""
    (message,) = [m.message for m in smtp_server.to(address) if m.message["X-Rekindle-Key"] == key]
    text = message.get_body(("plain",)).get_content()
    markup = message.get_body(("html",)).get_content()
    links = set(LETTER.findall(text))
    assert len(links) == 1 and links == set(LETTER.findall(markup)), (links, key)
    return links.pop()


def html_part(smtp_server, address: str, key: str) -> str:
    (message,) = [m.message for m in smtp_server.to(address) if m.message["X-Rekindle-Key"] == key]
    return message.get_body(("html",)).get_content().replace("\r\n", "\n")


def secret_of(env: dict[str, str]) -> str:
    runtime = Runtime(env=env)
    try:
        with runtime.session() as session:
            return db.installation_secret(session, None)
    finally:
        runtime.close()


def subscriber_id(env: dict[str, str], email: str) -> int | None:
    path = env["REKINDLE_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT id FROM subscribers WHERE email = ?", (email,)).fetchone()
    return row[0] if row else None


def database_dump(env: dict[str, str]) -> list[str]:
    """Every row of every table, as SQL: equal dumps mean nothing changed."""
    path = env["REKINDLE_DATABASE_URL"].removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def assert_refused(response, status: int = 400) -> None:
    """An error page: no letter in it, kept out of search engines, the usual headers."""
    body = response.get_data(as_text=True)
    assert response.status_code == status, body
    assert "Hi Ada" not in body and "Hi Bea" not in body and LESSON_1_SENTENCE not in body
    assert response.headers["X-Robots-Tag"] == "noindex, nofollow"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


# --- the letter, for the subscriber it was sent to -------------------------------------------


def test_a_lessons_link_shows_that_readers_letter_exactly_as_mailed(mailed, smtp_server):
    """GET /letters/<token> answers the reader's own HTML part, noindex, with the usual headers."""
    link = letter_link(smtp_server, ADA, "lesson-1")
    with app_client(mailed) as client:
        response = client.get(link)
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert "Hi Ada," in page and LESSON_1_SENTENCE in page
    assert ROBOTS in page
    assert page.replace(ROBOTS + "\n", "") == html_part(smtp_server, ADA, "lesson-1")
    headers = response.headers
    assert headers["X-Robots-Tag"] == "noindex, nofollow"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "no-store" in headers["Cache-Control"]


def test_a_reminders_link_leads_to_its_weeks_letter(mailed, smtp_server):
    """The nudge's "read this week's letter again" opens lesson 1 for that reader."""
    link = letter_link(smtp_server, ADA, "reminder-1")
    assert link == letter_link(smtp_server, ADA, "lesson-1")
    with app_client(mailed) as client:
        page = client.get(link).get_data(as_text=True)
    assert LESSON_1_SENTENCE in page and "Week 1 of 6" in page


def test_each_reader_sees_only_their_own_letter(mailed, smtp_server):
    """Ada's link shows Ada's letter and Bea's shows Bea's: name and unsubscribe link their own."""
    ada, bea = letter_link(smtp_server, ADA, "lesson-1"), letter_link(smtp_server, BEA, "lesson-1")
    assert ada != bea
    with app_client(mailed) as client:
        for link, mine, theirs in ((ada, "Hi Ada,", "Hi Bea,"), (bea, "Hi Bea,", "Hi Ada,")):
            page = client.get(link).get_data(as_text=True)
            assert mine in page and theirs not in page
    assert html_part(smtp_server, BEA, "lesson-1") in page.replace(ROBOTS + "\n", "")


def _with_mac_changed(token: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[-3] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def _with_key_changed(token: str, key: str) -> str:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    forged = raw[:4] + key.encode() + raw[-16:]  # another lesson, the same signature
    return base64.urlsafe_b64encode(forged).decode().rstrip("=")


def test_forged_and_foreign_tokens_get_400_and_show_no_letter(mailed, smtp_server):
    """Changed, cut, borrowed or wrongly signed tokens: 400, no letter, nothing learned."""
    link = letter_link(smtp_server, ADA, "lesson-1")
    token = link.rsplit("/", 1)[1]
    ada_id = subscriber_id(mailed, ADA)
    assert ada_id is not None
    secret = secret_of(mailed)
    unsubscribe = re.search(
        r"/unsubscribe/([^\s>]+)",
        next(m for m in smtp_server.to(ADA)).message.get_body(("plain",)).get_content(),
    ).group(1)
    forged = {
        "signature changed": _with_mac_changed(token),
        "another lesson, same signature": _with_key_changed(token, "lesson-2"),
        "cut short": token[:-4],
        "padded": token + "==",
        "not base64": "not*a*token",
        "an unsubscribe token": unsubscribe,
        "signed with another secret": Tokens("another secret").letter(ada_id, ADA, "lesson-1"),
        "Ada's id, Bea's address": Tokens(secret).letter(ada_id, BEA, "lesson-1"),
        "a genuine token for no letter": Tokens(secret).letter(ada_id, ADA, "confirm"),
        "ten thousand characters": "A" * 10_000,
    }
    with app_client(mailed) as client:
        assert client.get(link).status_code == 200
        for what, bad in forged.items():
            response = client.get(f"/letters/{bad}")
            assert response.status_code in (400, 404), what
            assert_refused(response, response.status_code)
            if what != "ten thousand characters":
                assert response.status_code == 400, what
                assert "doesn’t work" in response.get_data(as_text=True), what


def test_an_erased_readers_link_gets_410_and_never_shows_a_later_readers_letter(
    mailed, smtp_server
):
    """Erased: 410. A newcomer given the same id (SQLite reuses it) never sees Ada's link work."""
    link = letter_link(smtp_server, ADA, "lesson-1")
    bea_link = letter_link(smtp_server, BEA, "lesson-1")
    ada_id = subscriber_id(mailed, ADA)
    for email in (ADA, BEA):
        done = run(mailed, "subscribers", "remove", email)
        assert done.exit_code == 0, done.output
    with app_client(mailed) as client:
        gone = client.get(link)
        assert_refused(gone, 410)
        assert "isn’t available" in gone.get_data(as_text=True)
        add(mailed, CAL, "--name", "Cal", now=ADDED)
        assert subscriber_id(mailed, CAL) == ada_id  # the id came round again
        assert_refused(client.get(link), 400)
        assert_refused(client.get(bea_link), 410)


def test_get_and_head_change_nothing_and_other_methods_are_refused(mailed, smtp_server):
    """Reading a letter (GET, HEAD, many times) writes nothing; POST and PUT get 405."""
    link = letter_link(smtp_server, ADA, "lesson-1")
    before = database_dump(mailed)
    sent = len(smtp_server.messages)
    with app_client(mailed) as client:
        for _ in range(3):
            assert client.get(link).status_code == 200
        head = client.head(link)
        assert head.status_code == 200 and head.get_data() == b""
        assert head.headers["X-Robots-Tag"] == "noindex, nofollow"
        assert client.post(link, headers={"Origin": BASE_URL}).status_code == 405
        assert client.put(link).status_code == 405
        assert client.head("/letters/forged").status_code == 400
    assert database_dump(mailed) == before
    assert len(smtp_server.messages) == sent


def test_letters_and_privacy_pages_against_a_real_server(mailed, smtp_server, tmp_path):
    """`serve` answers GET and HEAD of a letter with noindex, and the privacy page to anyone."""
    link = letter_link(smtp_server, ADA, "lesson-1")
    with serving(mailed, tmp_path / "serve.log") as web:
        page = web.get(link)
        assert page.status == 200 and "Hi Ada," in page.body and ROBOTS in page.body
        assert page.headers["x-robots-tag"] == "noindex, nofollow"
        head = web.request("HEAD", link)
        assert head.status == 200 and head.body == ""
        assert head.headers["x-robots-tag"] == "noindex, nofollow"
        assert web.get(link[:-2]).status == 400
        privacy = web.get("/privacy")
        assert privacy.status == 200 and "What we keep" in privacy.body
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


# --- privacy ---------------------------------------------------------------------------------


def test_privacy_page_says_what_is_kept_and_how_to_erase_it(env):
    """/privacy names each thing stored and both ways out: unsubscribe, and asking to erase."""
    env["REKINDLE_REPLY_TO"] = "Rekindle <care@example.org>"
    with app_client(env) as client:
        response = client.get("/privacy")
    page = " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())
    assert response.status_code == 200
    for stored in (
        "your email address",
        "your first name",
        "your time zone",
        "a record of your consent",
        "your delivery history",
    ):
        assert stored in page, stored
    assert "unsubscribe link" in page and "care@example.org" in page
    assert "deleted" in page and "no tracking pixels" in page
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_sign_up_form_links_the_privacy_note_beside_it(env):
    """The note under the form links /privacy, or the operator's privacy_url when it is set."""
    with app_client(env) as client:
        page = client.get("/").get_data(as_text=True)
    note = page.split("</form>", 1)[1].split("</p>", 1)[0]
    assert 'href="/privacy"' in note
    own = "https://rekindle.example.org/our-privacy-policy"
    with app_client({**env, "REKINDLE_PRIVACY_URL": own}) as client:
        page = client.get("/").get_data(as_text=True)
    assert f'href="{own}"' in page.split("</form>", 1)[1].split("</p>", 1)[0]
    assert 'href="/privacy"' not in page


def test_every_page_has_a_footer_even_without_a_postal_address(env):
    """Without postal_address every page still ends with a footer: the course, its privacy link."""
    env.pop("REKINDLE_POSTAL_ADDRESS")
    with app_client(env) as client:
        for path in ("/", "/privacy", "/confirm/nonsense", "/letters/nonsense"):
            page = client.get(path).get_data(as_text=True)
            footer = page.split("<footer>", 1)[1].split("</footer>", 1)[0]
            assert "Rekindle" in footer and 'href="/privacy"' in footer, path
            assert "Springfield" not in page


def test_web_pages_use_typographic_apostrophes(env):
    """Pages say "you’re", never "you're", as the letters do."""
    with app_client(env) as client:
        for path in ("/", "/privacy", "/confirm/nonsense", "/unsubscribe/nonsense"):
            page = client.get(path).get_data(as_text=True)
            prose = unescape(
                re.sub(r"<script>.*?</script>|<style>.*?</style>|<[^>]+>", " ", page, flags=re.S)
            )
            assert not re.search(r"[A-Za-z]'[A-Za-z]", prose), (path, re.findall(r"\w+'\w+", prose))


def test_a_privacy_url_that_is_not_http_is_a_configuration_error(env):
    """privacy_url must be an http(s) URL: one error line, exit 1."""
    done = run({**env, "REKINDLE_PRIVACY_URL": "javascript:alert(1)"}, "config", "show", "--json")
    assert done.exit_code == 1
    assert "privacy_url" in done.output and "http(s)" in done.output
    shown = run(
        {**env, "REKINDLE_PRIVACY_URL": "https://example.org/p"}, "config", "show", "--json"
    )
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["privacy_url"] == {
        "value": "https://example.org/p",
        "source": "REKINDLE_PRIVACY_URL",
    }


def test_letter_tokens_are_url_safe_and_bind_subscriber_letter_and_address():
    """A letter token is URL-safe and short; it names (id, key) and holds only for that address."""
    tokens = Tokens("s3cret")
    token = tokens.letter(42, "Ada@Example.org", "lesson-3")
    assert re.fullmatch(r"[A-Za-z0-9_-]{20,60}", token)
    assert tokens.letter_claim(token) == (42, "lesson-3")
    assert tokens.is_letter(token, 42, "ada@example.org")  # addresses compare case-blind
    assert not tokens.is_letter(token, 43, "ada@example.org")
    assert not tokens.is_letter(token, 42, "bea@example.org")
    assert tokens.letter(42, "ada@example.org", "lesson-4") != token
