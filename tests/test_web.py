"""Self-service (README, "People joining and leaving on their own"): the sign-up form, double
opt-in links and one-click unsubscribe.

Most tests drive the Flask app (mailer.web.create_app) through its test client on
a real SQLite file (some also on PostgreSQL) with a real aiosmtpd server; one test
runs the whole journey against `rekindle-mail serve` on loopback (tests/webserve.py;
the proxy, size and relay tests against `serve` are in test_web_trust.py). Sign-ups
are stored and mailed by the app's background worker: the helpers that post wait
until it is idle (Courier.wait_idle), so nothing sleeps. Time is REKINDLE_NOW in the
dict the app's Runtime reads on every request. A race is shown deterministically by
holding the worker thread after one SQL statement (observed through a SQLAlchemy
event, nothing replaced) while `send` runs.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from html.parser import HTMLParser
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner, URLSafeSerializer, URLSafeTimedSerializer
from sqlalchemy import Engine, event
from werkzeug.test import TestResponse

from clirun import add, listed, run, script, send
from mailer.runtime import Runtime
from mailer.tokens import CONFIRM_SALT
from mailer.web import courier_of, create_app
from mailer.web.courier import STORE_THREAD, Courier
from mailserver import MailServer, free_port
from webserve import poll, serving

BASE_URL = "https://rekindle.example.org"  # what the `env` fixture configures
DEFAULT_ZONE = "Europe/Berlin"  # the configured default zone in these tests
NY = "America/New_York"
SIGNUP = "2026-03-01T23:00:00+00:00"  # Sunday 18:00 in New York
CONFIRM = "2026-03-02T15:00:00+00:00"  # Monday 10:00 in New York: after that morning's window
# Lesson 1 is due at the first 09:00 in New York at or after CONFIRM: Tuesday 3 March.
LESSON_1 = datetime(2026, 3, 3, 9, 0, tzinfo=ZoneInfo(NY))
ADA = "ada@example.org"
BEA = "bea@example.org"
CAL = "cal@example.org"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
FORM = "application/x-www-form-urlencoded"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def iso(instant: datetime) -> str:
    return instant.isoformat()


# --- reading pages and mail ---------------------------------------------------------------


class Page(HTMLParser):
    """A served HTML page: its start tags (with attributes) and its visible text."""

    def __init__(self, html: str | bytes) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self._text: list[str] = []
        self._skip = 0
        self.feed(html.decode() if isinstance(html, bytes) else html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._text.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self._text).split())

    def all(self, tag: str, **want: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in want.items())]

    def one(self, tag: str, **want: str) -> dict[str, str | None]:
        found = self.all(tag, **want)
        assert len(found) == 1, (tag, want, found)
        return found[0]


def parts(message: EmailMessage) -> tuple[str, str]:
    """(text, html) of a received message, decoded."""
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


def confirm_url(message: EmailMessage) -> str:
    """The confirmation link, which must be the same in the text and the HTML part."""
    assert str(message["X-Rekindle-Key"]) == "confirm"
    pattern = re.escape(BASE_URL) + r"/confirm/[A-Za-z0-9_\-.]+"
    text, html = parts(message)
    in_text, in_html = set(re.findall(pattern, text)), set(re.findall(pattern, html))
    assert len(in_text) == 1, text
    assert in_text == in_html, (in_text, in_html)
    return in_text.pop()


def unsubscribe_url(message: EmailMessage) -> str:
    """The https URL of the List-Unsubscribe header."""
    links = re.findall(r"<([^>]+)>", str(message["List-Unsubscribe"]))
    https = [link for link in links if link.startswith(BASE_URL + "/unsubscribe/")]
    assert len(https) == 1, links
    return https[0]


def path(url: str) -> str:
    return urlsplit(url).path


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def forge(token: str) -> str:
    """The token with one character of its signature changed (one that carries bits)."""
    payload, signature = token.rsplit(".", 1)
    i = len(signature) // 2
    swapped = "A" if signature[i] != "A" else "B"
    return f"{payload}.{signature[:i]}{swapped}{signature[i + 1 :]}"


def aged_confirm_token(secret: str, genuine: str, age: timedelta) -> str:
    """The genuine token's content, signed with `secret` as if `age` ago."""
    issued = int(time.time() - age.total_seconds())

    class Backdated(TimestampSigner):
        def get_timestamp(self) -> int:
            return issued

    value = URLSafeTimedSerializer(secret, salt=CONFIRM_SALT).loads(genuine)
    backdated = URLSafeTimedSerializer(secret, salt=CONFIRM_SALT, signer=Backdated)
    return str(backdated.dumps(value))


# --- the app on the test's environment ----------------------------------------------------


@pytest.fixture
def web_env(env: dict[str, str], smtp_server: MailServer) -> dict[str, str]:
    """The `env` fixture pointed at the aiosmtpd server, default zone Berlin, clock at SIGNUP.

    The app's Runtime reads REKINDLE_NOW from this very dict on every request, so
    assigning web_env["REKINDLE_NOW"] moves the clock.
    """
    env.update(
        REKINDLE_SMTP_URL=smtp_server.url, REKINDLE_TIMEZONE=DEFAULT_ZONE, REKINDLE_NOW=SIGNUP
    )
    return env


@pytest.fixture
def db_env(web_env: dict[str, str], database_url: str) -> dict[str, str]:
    """web_env on SQLite and on PostgreSQL (when available)."""
    web_env["REKINDLE_DATABASE_URL"] = database_url
    return web_env


def courier(app: Flask) -> Courier:
    """The app's background worker (sign-ups are stored and mailed through it)."""
    return courier_of(app)


@contextmanager
def app_client(env: dict[str, str]) -> Iterator[FlaskClient]:
    """A test client for create_app(Runtime(env=env)); sender and database closed afterwards."""
    runtime = Runtime(config_path=None, env=env)
    app = create_app(runtime)
    try:
        yield app.test_client()
    finally:
        courier(app).close()
        runtime.close()


@pytest.fixture
def client(web_env: dict[str, str]) -> Iterator[FlaskClient]:
    """The web app on web_env."""
    with app_client(web_env) as test_client:
        yield test_client


def sign_up(
    client: FlaskClient,
    email: str,
    *,
    name: str = "",
    zone: str = NY,
    ip: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: str,
) -> TestResponse:
    """POST the sign-up form as a browser would (optionally from client address `ip`).

    Returns once the background sender has tried the confirmation it was handed.
    """
    data = {"email": email, "name": name, "timezone": zone, "website": "", **extra}
    environ = {"REMOTE_ADDR": ip} if ip else {}
    response = client.post("/subscribe", data=data, environ_base=environ, headers=headers or {})
    courier(client.application).wait_idle()
    return response


def confirm(client: FlaskClient, link: str, headers: dict[str, str] | None = None) -> TestResponse:
    """Press the confirm page's button: POST to the link's path (then let the welcome go)."""
    response = client.post(path(link), headers=headers or {})
    courier(client.application).wait_idle()
    return response


def check_inbox_page(client: FlaskClient) -> bytes:
    """The answer every accepted form post gets (taken from a throwaway address)."""
    response = sign_up(client, "reference@example.org", ip="192.0.2.250")
    assert response.status_code == 200
    return response.data


# --- GET / --------------------------------------------------------------------------------


def test_landing_page_has_the_form_with_default_zone_honeypot_and_security_headers(client):
    """GET / has the form (email, name, zone with the default selected, honeypot), CSP headers."""
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = Page(response.data)
    form = page.one("form", action="/subscribe")
    assert (form["method"] or "").lower() == "post"
    email = page.one("input", name="email")
    assert email["type"] == "email" and "required" in email
    page.one("input", name="name")
    page.one("select", name="timezone")
    options = page.all("option")
    values = [o["value"] for o in options]
    assert {"UTC", DEFAULT_ZONE, NY, "Asia/Kolkata"} <= set(values)
    selected = [o["value"] for o in options if "selected" in o]
    assert selected == [DEFAULT_ZONE]
    honeypot = page.one("input", name="website")
    assert honeypot["tabindex"] == "-1" and honeypot["autocomplete"] == "off"
    assert "Heal yourself first" in page.text and "Seek professional help" in page.text
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


def test_every_page_carries_the_security_headers(client, smtp_server):
    """The answer, confirmation and unsubscribe pages carry the same security headers."""
    answers = [sign_up(client, ADA)]
    link = confirm_url(smtp_server.to(ADA)[0].message)
    answers.append(client.get(path(link)))
    answers.append(client.get("/confirm/nonsense"))
    answers.append(client.get(path(unsubscribe_url(smtp_server.to(ADA)[0].message))))
    for response in answers:
        assert response.headers["Referrer-Policy"] == "same-origin", response.request.path
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert "no-store" in response.headers["Cache-Control"]  # token pages stay out of caches


# --- POST /subscribe ----------------------------------------------------------------------


def test_subscribe_stores_pending_and_sends_one_confirmation_with_the_link_in_both_parts(
    client, web_env, smtp_server
):
    """A post stores them pending; one confirmation with <base_url>/confirm/<token> arrives."""
    response = sign_up(client, ADA, name="Ada Lovelace")
    assert response.status_code == 200
    assert "Check your inbox" in Page(response.data).text
    row = listed(web_env)[ADA]
    assert (row["status"], row["name"], row["timezone"]) == ("pending", "Ada Lovelace", NY)
    assert row["next_due"] is None and row["lessons_sent"] == 0
    received = smtp_server.to(ADA)
    assert len(received) == 1
    message = received[0].message
    assert str(message["X-Rekindle-Key"]) == "confirm"
    assert message["To"].addresses[0].addr_spec == ADA
    assert confirm_url(message).startswith(f"{BASE_URL}/confirm/")


def test_form_answer_is_identical_for_a_new_a_pending_and_an_active_address(
    client, web_env, smtp_server
):
    """New, pending and active addresses get one same answer (no enumeration); no mail to active."""
    add(web_env, BEA, now=SIGNUP)  # an operator-added, active subscriber
    new = sign_up(client, ADA)
    pending = sign_up(client, ADA)
    active = sign_up(client, BEA)
    assert new.status_code == pending.status_code == active.status_code == 200
    assert new.data == pending.data == active.data
    assert smtp_server.keys(ADA) == ["confirm"]
    assert smtp_server.keys(BEA) == []
    rows = listed(web_env)
    assert rows[ADA]["status"] == "pending"
    assert rows[BEA]["status"] == "active"


def test_three_posts_of_one_address_send_one_confirmation_and_a_day_later_another(
    client, web_env, smtp_server
):
    """However often an address is posted, it gets one confirmation per 24 hours."""
    for variant in (ADA, "Ada@Example.org", f"  {ADA} "):
        assert sign_up(client, variant).status_code == 200
    assert len(listed(web_env)) == 1
    assert smtp_server.keys(ADA) == ["confirm"]
    web_env["REKINDLE_NOW"] = iso(at(SIGNUP) + timedelta(hours=23, minutes=59))
    assert sign_up(client, ADA).status_code == 200
    assert smtp_server.keys(ADA) == ["confirm"]
    web_env["REKINDLE_NOW"] = iso(at(SIGNUP) + timedelta(hours=24))
    assert sign_up(client, ADA).status_code == 200
    assert smtp_server.keys(ADA) == ["confirm", "confirm"]
    # The newest link works.
    web_env["REKINDLE_NOW"] = iso(at(SIGNUP) + timedelta(hours=25))
    second = confirm_url(smtp_server.to(ADA)[1].message)
    assert confirm(client, second).status_code == 200
    assert listed(web_env)[ADA]["status"] == "active"


@pytest.mark.parametrize(
    "bad", ["not-an-address", "ada@", "ada@@example.org", "", "<script>alert(1)</script>"]
)
def test_an_invalid_address_gets_400_with_an_error_and_nothing_is_stored_or_sent(
    client, web_env, smtp_server, bad
):
    """A bad address re-shows the form with an error (400) and the input; nothing stored or sent."""
    hostile = '"><b>Ada</b>'
    response = sign_up(client, bad, name=hostile)
    assert response.status_code == 400
    page = Page(response.data)
    error = page.one("p", role="alert")
    assert error["class"] == "error"
    assert "address" in page.text
    assert page.one("input", name="name")["value"] == hostile  # kept, and escaped:
    assert b"<b>Ada</b>" not in response.data and b"<script>alert(1)" not in response.data
    assert page.one("form", action="/subscribe")
    assert listed(web_env) == {}
    assert smtp_server.messages == [] and smtp_server.connections == 0


@pytest.mark.parametrize("name", ["Ada\r\nBcc: victim@example.net", "A" * 1000])
def test_a_bad_name_gets_400_and_nothing_is_stored_or_sent(client, web_env, smtp_server, name):
    """A name with a line break, or far too long, gets the form back with an error (400)."""
    response = sign_up(client, ADA, name=name)
    assert response.status_code == 400
    assert Page(response.data).one("p", role="alert")["class"] == "error"
    assert listed(web_env) == {}
    assert smtp_server.messages == []


def test_an_unknown_zone_falls_back_to_the_configured_default(client, web_env):
    """A time zone outside the list (or missing) becomes the configured default, not an error."""
    assert sign_up(client, ADA, zone="Mars/Olympus_Mons").status_code == 200
    assert client.post("/subscribe", data={"email": BEA}).status_code == 200
    courier(client.application).wait_idle()
    rows = listed(web_env)
    assert rows[ADA]["timezone"] == DEFAULT_ZONE
    assert rows[BEA]["timezone"] == DEFAULT_ZONE


def test_a_filled_honeypot_gets_the_usual_answer_but_nothing_is_stored_or_sent(
    client, web_env, smtp_server
):
    """A filled `website` honeypot gets the usual answer, but nothing is stored or sent."""
    reference = check_inbox_page(client)
    baseline = len(smtp_server.messages)
    response = sign_up(client, ADA, website="https://spam.example.com/")
    assert response.status_code == 200
    assert response.data == reference
    assert ADA not in listed(web_env)
    assert len(smtp_server.messages) == baseline and smtp_server.to(ADA) == []


def test_a_client_is_limited_to_five_posts_then_429_while_others_still_get_through(
    client, web_env, smtp_server
):
    """The sixth post from one client gets 429 and does nothing; another client is still served."""
    crowd = [f"person{i}@example.org" for i in range(6)]
    for address in crowd[:5]:
        assert sign_up(client, address, ip="203.0.113.7").status_code == 200
    limited = sign_up(client, crowd[5], ip="203.0.113.7")
    assert limited.status_code == 429
    assert "Please wait" in Page(limited.data).text
    assert crowd[5] not in listed(web_env)
    assert smtp_server.to(crowd[5]) == []
    assert len(smtp_server.messages) == 5
    other = sign_up(client, CAL, ip="198.51.100.9")
    assert other.status_code == 200
    assert smtp_server.keys(CAL) == ["confirm"]


def test_refused_posts_use_none_of_a_clients_five_sign_ups(client, web_env, smtp_server):
    """Form posts refused as invalid (400) do not count: the client still has five sign-ups."""
    client_ip = "203.0.113.8"
    for bad in ("not-an-address", "ada@", "<script>@x"):
        assert sign_up(client, bad, ip=client_ip).status_code == 400
    assert sign_up(client, ADA, name="A\nB", ip=client_ip).status_code == 400
    crowd = [f"person{i}@example.org" for i in range(6)]
    codes = [sign_up(client, address, ip=client_ip).status_code for address in crowd]
    assert codes == [200] * 5 + [429]
    assert sorted(listed(web_env)) == sorted(crowd[:5])


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "N" * 10_000), ("email", "a" * 5_000 + "@example.org")],
    ids=["long-name", "long-address"],
)
def test_over_long_values_are_refused_and_never_shown_again(
    client, web_env, smtp_server, field, value
):
    """A value longer than its field takes gets 400, and the page does not echo it back."""
    fields = {"email": ADA, "name": "", field: value}
    response = sign_up(client, fields["email"], name=fields["name"])
    assert response.status_code == 400
    page = Page(response.data)
    assert page.one("p", role="alert")
    assert value[:200] not in response.data.decode()
    assert len(response.data) < 200_000  # the whole form page with every zone, no echo
    shown = page.one("input", name=field).get("value") or ""
    assert len(shown) <= 254, shown[:80]
    assert listed(web_env) == {}
    assert smtp_server.messages == []


def test_a_body_over_16_kb_gets_413_and_nothing_is_stored(client, web_env, smtp_server):
    """A form body over 16 KB gets 413 before it is read; one of exactly 16 KB is read."""
    prefix = f"email={ADA.replace('@', '%40')}&timezone=UTC&name="
    for size, code in ((16 * 1024 + 1, 413), (16 * 1024, 400)):
        body = prefix + "N" * (size - len(prefix))
        response = client.post("/subscribe", data=body, content_type=FORM)
        assert response.status_code == code, size
        assert "NNNNNNNNNN" not in response.data.decode()
    assert listed(web_env) == {}
    assert smtp_server.messages == []


def _post_together(app: Flask, address: str, clients: int) -> list[int]:
    """POST one address from `clients` threads released at the same moment; their status codes."""
    barrier = threading.Barrier(clients)
    codes: list[int] = []

    def post(i: int) -> None:
        own = app.test_client()
        barrier.wait()
        codes.append(sign_up(own, address, ip=f"192.0.2.{i + 1}").status_code)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return codes


def test_simultaneous_posts_of_one_new_address_store_one_subscriber(db_env, smtp_server):
    """One new address posted by four clients at the same moment: all 200, one pending row."""
    twins = [f"twin{i}@example.org" for i in range(3)]
    with app_client(db_env) as client:
        for address in twins:
            assert _post_together(client.application, address, 4) == [200] * 4
            assert smtp_server.keys(address) == ["confirm"]
    rows = listed(db_env)
    assert sorted(rows) == twins
    assert {row["status"] for row in rows.values()} == {"pending"}


@dataclass(eq=False)
class Gate:
    """Holds the thread named `thread` right after its first SQL statement matching `pattern`."""

    thread: str
    pattern: re.Pattern[str]
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def __call__(self, conn: object, cursor: object, statement: str, *_: object) -> None:
        if threading.current_thread().name != self.thread or self.reached.is_set():
            return
        if self.pattern.search(statement):
            self.reached.set()
            # Bounded: should the product ever lock here, `send` waits and then goes on.
            self.release.wait(timeout=10)


@contextmanager
def held_after(thread: str, pattern: str) -> Iterator[Gate]:
    """Observe every engine's SQL and hold `thread` after its first statement matching `pattern`.

    Nothing is replaced: this only chooses the moment at which a real request
    and a real `send` run overlap, so that the race shows every time.
    """
    gate = Gate(thread, re.compile(pattern, re.DOTALL | re.IGNORECASE))
    event.listen(Engine, "after_cursor_execute", gate)
    try:
        yield gate
    finally:
        gate.release.set()
        event.remove(Engine, "after_cursor_execute", gate)


def test_a_post_overlapping_the_send_run_that_delivers_the_confirmation_sends_no_second(
    db_env, smtp_server
):
    """A post that reads the ledger just before `send` delivers its confirmation sends no second."""
    down = {**db_env, "REKINDLE_SMTP_URL": f"smtp://127.0.0.1:{free_port()}"}
    with app_client(down) as broken:
        assert sign_up(broken, ADA).status_code == 200  # pending; its confirmation waits
    assert smtp_server.keys(ADA) == []
    db_env["REKINDLE_NOW"] = iso(at(SIGNUP) + timedelta(minutes=5))
    answers: list[int] = []
    first_ledger_read = r"^\s*SELECT\b.*\bFROM deliveries\b"
    # The sign-up is stored by the app's background thread: hold that one.
    with app_client(db_env) as client, held_after(STORE_THREAD, first_ledger_read) as gate:
        worker = threading.Thread(
            target=lambda: answers.append(sign_up(client, ADA).status_code), name="post"
        )
        worker.start()
        assert gate.reached.wait(timeout=30), "the post never read the delivery ledger"
        send(db_env, db_env["REKINDLE_NOW"])  # cron's run, at that very moment
        gate.release.set()
        worker.join(timeout=30)
    assert answers == [200]
    assert smtp_server.keys(ADA) == ["confirm"]  # one confirmation per 24 hours


# --- GET /confirm/<token> -----------------------------------------------------------------


def test_confirm_link_activates_at_that_instant_welcomes_once_and_lesson_1_follows(
    db_env, smtp_server
):
    """The link activates them from that instant, welcomes them once; lesson 1 follows at 09:00."""
    with app_client(db_env) as client:
        assert sign_up(client, ADA, name="Ada").status_code == 200
        link = confirm_url(smtp_server.to(ADA)[0].message)
        db_env["REKINDLE_NOW"] = CONFIRM
        response = confirm(client, link)
        assert response.status_code == 200
        text = Page(response.data).text
        assert "You’re in" in text
        assert "Tuesday 3 March at 09:00" in text and "America/New York" in text
        row = listed(db_env)[ADA]
        assert row["status"] == "active"
        assert at(row["started_at"]) == at(CONFIRM)
        assert at(row["confirmed_at"]) == at(CONFIRM)
        assert at(row["next_due"]) == LESSON_1
        assert row["next_lesson"] == 1
        assert smtp_server.keys(ADA) == ["confirm", "welcome"]
        welcome = smtp_server.to(ADA)[1].message
        assert "glad you are" in parts(welcome)[0]
        # The same link again: "already", nothing changes, no second welcome.
        db_env["REKINDLE_NOW"] = iso(at(CONFIRM) + timedelta(hours=1))
        again = confirm(client, link)
        assert again.status_code == 200
        assert "already" in Page(again.data).text
        assert at(listed(db_env)[ADA]["next_due"]) == LESSON_1
        assert smtp_server.keys(ADA) == ["confirm", "welcome"]
    assert send(db_env, LESSON_1 - timedelta(minutes=1))["sent"] == 0
    assert smtp_server.keys(ADA) == ["confirm", "welcome"]
    assert send(db_env, LESSON_1)["sent"] == 1
    assert smtp_server.keys(ADA) == ["confirm", "welcome", "lesson-1"]
    assert listed(db_env)[ADA]["lessons_sent"] == 1


def test_forged_or_foreign_confirm_tokens_get_400_and_change_nothing(client, web_env, smtp_server):
    """Altered, foreign-secret or wrong-kind confirm tokens get 400 and change nothing."""
    sign_up(client, ADA)
    message = smtp_server.to(ADA)[0].message
    genuine = token_of(confirm_url(message))
    pair = URLSafeTimedSerializer("x", salt=CONFIRM_SALT).loads_unsafe(genuine)[1]
    elsewhere = URLSafeTimedSerializer("another installation", salt=CONFIRM_SALT).dumps(pair)
    unsubscribe_token = token_of(unsubscribe_url(message))
    web_env["REKINDLE_NOW"] = CONFIRM
    for bad in (forge(genuine), elsewhere, unsubscribe_token, "not-a-token"):
        for method in ("GET", "HEAD", "POST"):
            response = client.open(f"/confirm/{bad}", method=method)
            assert response.status_code == 400, (method, bad)
            if method != "HEAD":
                assert "doesn’t work" in Page(response.data).text
    courier(client.application).wait_idle()
    assert listed(web_env)[ADA]["status"] == "pending"
    assert smtp_server.keys(ADA) == ["confirm"]
    # The genuine link still works afterwards.
    assert confirm(client, f"/confirm/{genuine}").status_code == 200
    assert listed(web_env)[ADA]["status"] == "active"


def test_get_and_head_of_a_confirm_link_change_nothing_only_its_button_post_confirms(
    client, web_env, smtp_server
):
    """GET and HEAD of a confirm link (scanners, `curl -I`) change nothing; its one button POSTs."""
    sign_up(client, ADA)
    link = path(confirm_url(smtp_server.to(ADA)[0].message))
    web_env["REKINDLE_NOW"] = CONFIRM
    for _ in range(2):
        assert client.head(link).status_code == 200
        page = client.get(link)
        assert page.status_code == 200
        html = Page(page.data)
        form = html.one("form")
        assert (form["method"], form["action"]) == ("post", link)
        assert len(html.all("button")) == 1
        assert "You’re in" not in html.text
    courier(client.application).wait_idle()
    assert listed(web_env)[ADA]["status"] == "pending"
    assert smtp_server.keys(ADA) == ["confirm"]
    done = confirm(client, link)
    assert done.status_code == 200 and "You’re in" in Page(done.data).text
    assert listed(web_env)[ADA]["status"] == "active"
    assert smtp_server.keys(ADA) == ["confirm", "welcome"]
    # Afterwards GET says so, without a button; a replayed POST is harmless.
    after = client.get(link)
    assert after.status_code == 200 and Page(after.data).all("form") == []
    assert "already" in Page(after.data).text
    replay = confirm(client, link)
    assert replay.status_code == 200 and "already" in Page(replay.data).text
    assert smtp_server.keys(ADA) == ["confirm", "welcome"]


@pytest.mark.parametrize(
    ("age", "code", "status"),
    [(timedelta(days=8), 400, "pending"), (timedelta(days=6), 200, "active")],
    ids=["8-days-old-expired", "6-days-old-valid"],
)
def test_confirm_tokens_expire_after_seven_days(web_env, smtp_server, age, code, status):
    """A confirmation link older than seven days gets 400; a six-day-old one still works."""
    web_env["REKINDLE_SECRET_KEY"] = "a test secret that signs every link"
    with app_client(web_env) as client:
        sign_up(client, ADA)
        genuine = token_of(confirm_url(smtp_server.to(ADA)[0].message))
        token = aged_confirm_token(web_env["REKINDLE_SECRET_KEY"], genuine, age)
        web_env["REKINDLE_NOW"] = CONFIRM
        assert client.get(f"/confirm/{token}").status_code == code
        assert confirm(client, f"/confirm/{token}").status_code == code
    assert listed(web_env)[ADA]["status"] == status
    assert smtp_server.keys(ADA) == (["confirm"] if code == 400 else ["confirm", "welcome"])


def test_confirm_link_of_an_erased_subscriber_is_refused(client, web_env, smtp_server):
    """After `subscribers remove`, their confirmation link gets 400 and creates nobody."""
    sign_up(client, ADA)
    link = confirm_url(smtp_server.to(ADA)[0].message)
    assert run(web_env, "subscribers", "remove", ADA).exit_code == 0
    assert client.get(path(link)).status_code == 400
    assert confirm(client, link).status_code == 400
    assert listed(web_env) == {}
    assert smtp_server.keys(ADA) == ["confirm"]


# --- /unsubscribe/<token> -----------------------------------------------------------------


@pytest.fixture
def lesson_1(web_env: dict[str, str], smtp_server: MailServer) -> EmailMessage:
    """Lesson 1 as ADA (added by the operator in New York) received it."""
    add(web_env, ADA, "--timezone", NY, now=CONFIRM)
    assert send(web_env, LESSON_1)["sent"] == 1
    (received,) = smtp_server.to(ADA)
    assert str(received.message["X-Rekindle-Key"]) == "lesson-1"
    return received.message


@pytest.mark.parametrize(
    "body", [ONE_CLICK, {}], ids=["rfc8058-one-click", "page-button-empty-form"]
)
def test_unsubscribe_get_shows_a_button_and_only_post_unsubscribes(
    client, web_env, smtp_server, lesson_1, body
):
    """GET of the List-Unsubscribe URL shows a button and changes nothing; a POST unsubscribes."""
    link = path(unsubscribe_url(lesson_1))
    page = client.get(link)
    assert page.status_code == 200
    form = Page(page.data).one("form")
    assert (form["method"] or "").lower() == "post"
    assert form["action"] == link
    assert Page(page.data).all("button")
    assert listed(web_env)[ADA]["status"] == "active"
    web_env["REKINDLE_NOW"] = iso(LESSON_1 + timedelta(hours=2))
    done = client.post(link, data=body, content_type=FORM)
    assert done.status_code == 200
    assert "You’re unsubscribed" in Page(done.data).text
    row = listed(web_env)[ADA]
    assert row["status"] == "unsubscribed" and row["next_due"] is None
    # Posting again is harmless; the page now says they are gone, without a button.
    assert client.post(link, data=body, content_type=FORM).status_code == 200
    after = client.get(link)
    assert after.status_code == 200 and Page(after.data).all("form") == []
    for week in (1, 2, 3):
        assert send(web_env, LESSON_1 + timedelta(days=7 * week))["sent"] == 0
    assert smtp_server.keys(ADA) == ["lesson-1"]


def test_unsubscribe_with_a_forged_token_gets_400_and_changes_nothing(
    client, web_env, smtp_server, lesson_1
):
    """An altered unsubscribe token, or a confirm token, gets 400 on GET and POST."""
    genuine = token_of(unsubscribe_url(lesson_1))
    wrong_kind = URLSafeTimedSerializer("x", salt=CONFIRM_SALT).dumps([1, "0" * 12])
    for bad in (forge(genuine), wrong_kind, "nonsense"):
        assert client.get(f"/unsubscribe/{bad}").status_code == 400, bad
        response = client.post(f"/unsubscribe/{bad}", data=ONE_CLICK, content_type=FORM)
        assert response.status_code == 400, bad
        assert "doesn’t work" in Page(response.data).text
    assert listed(web_env)[ADA]["status"] == "active"
    assert send(web_env, LESSON_1 + timedelta(days=7))["sent"] == 1


def test_unsubscribe_link_of_an_erased_subscriber_answers_200_and_touches_nobody_else(
    client, web_env, smtp_server, lesson_1
):
    """An erased subscriber's link answers 200 and never unsubscribes whoever gets their id."""
    old = path(unsubscribe_url(lesson_1))
    assert run(web_env, "subscribers", "remove", ADA).exit_code == 0
    add(web_env, BEA, "--timezone", NY, now=CONFIRM)
    assert send(web_env, LESSON_1)["sent"] == 1
    new = unsubscribe_url(smtp_server.to(BEA)[0].message)
    # SQLite hands the erased row's id to the next subscriber: the old link names BEA's id.
    ids = [URLSafeSerializer("x").loads_unsafe(token_of(u))[1][0] for u in (old, new)]
    assert ids[0] == ids[1], ids
    assert client.get(old).status_code == 200
    assert client.post(old, data=ONE_CLICK, content_type=FORM).status_code == 200
    assert listed(web_env)[BEA]["status"] == "active"
    assert ADA not in listed(web_env)


def test_someone_who_unsubscribed_can_rejoin_and_continues_with_lesson_2_a_week_later(
    client, web_env, smtp_server, lesson_1
):
    """After a one-click unsubscribe, signing up and confirming again resumes at the next lesson."""
    web_env["REKINDLE_NOW"] = iso(LESSON_1 + timedelta(hours=1))
    link = path(unsubscribe_url(lesson_1))
    assert client.post(link, data=ONE_CLICK, content_type=FORM).status_code == 200
    web_env["REKINDLE_NOW"] = iso(LESSON_1 + timedelta(days=2))
    assert sign_up(client, ADA).status_code == 200
    assert listed(web_env)[ADA]["status"] == "pending"
    assert smtp_server.keys(ADA) == ["lesson-1", "confirm"]
    assert confirm(client, confirm_url(smtp_server.to(ADA)[1].message)).status_code == 200
    row = listed(web_env)[ADA]
    assert (row["status"], row["next_lesson"], row["lessons_sent"]) == ("active", 2, 1)
    # A week after lesson 1's local date, at 09:00 (across the US DST change on 8 March).
    lesson_2 = LESSON_1 + timedelta(days=7)
    assert at(row["next_due"]) == lesson_2
    assert smtp_server.keys(ADA) == ["lesson-1", "confirm", "welcome"]
    assert send(web_env, lesson_2 - timedelta(minutes=1))["sent"] == 0
    assert send(web_env, lesson_2)["sent"] == 1
    assert smtp_server.keys(ADA) == ["lesson-1", "confirm", "welcome", "lesson-2"]


# --- posts from other sites ---------------------------------------------------------------

CROSS_SITE = {
    "another-site": {"Origin": "https://evil.example"},
    "lookalike-host": {"Origin": "https://rekindle.example.org.evil.example"},
    "other-port": {"Origin": "https://rekindle.example.org:8443"},
    "plain-http": {"Origin": "http://rekindle.example.org"},
    "opaque-null": {"Origin": "null"},
    "not-a-url": {"Origin": "rekindle.example.org"},
    "fetch-metadata": {"Sec-Fetch-Site": "cross-site"},
    "fetch-metadata-with-our-origin": {"Origin": BASE_URL, "Sec-Fetch-Site": "cross-site"},
}
SAME_SITE = {
    "base-url-origin": {"Origin": BASE_URL, "Sec-Fetch-Site": "same-origin"},
    "base-url-origin-default-port": {"Origin": "https://REKINDLE.example.org:443"},
    "addressed-origin": {"Origin": "http://localhost"},  # where the test client sends it
    "no-origin-one-click": {},  # curl, a script, a mail provider's RFC 8058 one-click
    "typed-or-bookmarked": {"Sec-Fetch-Site": "none"},
}


def three_posts(
    client: FlaskClient, smtp_server: MailServer, lesson_1: EmailMessage, headers: dict[str, str]
) -> list[TestResponse]:
    """Sign CAL up, confirm pending BEA and unsubscribe active ADA, each POST with `headers`."""
    sign_up(client, BEA)
    link = confirm_url(smtp_server.to(BEA)[0].message)
    data = {"email": CAL, "timezone": NY, "website": ""}
    answers = [client.post("/subscribe", data=data, headers=headers)]
    answers.append(client.post(path(link), headers=headers))
    unsubscribe = path(unsubscribe_url(lesson_1))
    answers.append(client.post(unsubscribe, data=ONE_CLICK, content_type=FORM, headers=headers))
    courier(client.application).wait_idle()
    return answers


@pytest.mark.parametrize("headers", CROSS_SITE.values(), ids=CROSS_SITE.keys())
def test_a_post_from_another_site_gets_403_and_changes_nothing(
    client, web_env, smtp_server, lesson_1, headers
):
    """Sign-up, confirm and unsubscribe posts from another site get 403 and change nothing."""
    answers = three_posts(client, smtp_server, lesson_1, headers)
    assert [a.status_code for a in answers] == [403, 403, 403]
    assert all("another site" in Page(a.data).text for a in answers)
    rows = listed(web_env)
    assert CAL not in rows
    assert (rows[ADA]["status"], rows[BEA]["status"]) == ("active", "pending")
    assert smtp_server.keys(BEA) == ["confirm"] and smtp_server.keys(CAL) == []


@pytest.mark.parametrize("headers", SAME_SITE.values(), ids=SAME_SITE.keys())
def test_a_post_from_our_pages_or_without_origin_is_judged_as_before(
    client, web_env, smtp_server, lesson_1, headers
):
    """Posts from base_url's origin, the addressed origin, or without Origin work as before."""
    answers = three_posts(client, smtp_server, lesson_1, headers)
    assert [a.status_code for a in answers] == [200, 200, 200]
    rows = listed(web_env)
    statuses = (rows[ADA]["status"], rows[BEA]["status"], rows[CAL]["status"])
    assert statuses == ("unsubscribed", "active", "pending")
    assert smtp_server.keys(BEA) == ["confirm", "welcome"]
    assert smtp_server.keys(CAL) == ["confirm"]


# --- subscribers add --double-opt-in ------------------------------------------------------


def test_cli_double_opt_in_stores_pending_sends_one_confirmation_and_refuses_active(
    web_env, smtp_server
):
    """`add --double-opt-in` stores pending, sends one confirmation; an active address exits 1."""
    done = script(web_env, "subscribers", "add", ADA, "--double-opt-in", "--timezone", NY)
    assert done.returncode == 0, done.stderr
    assert "pending" in done.stdout
    row = listed(web_env)[ADA]
    assert (row["status"], row["timezone"]) == ("pending", NY)
    assert smtp_server.keys(ADA) == ["confirm"]
    link = confirm_url(smtp_server.to(ADA)[0].message)
    # Again within 24 hours: still pending, no second email.
    again = run(web_env, "subscribers", "add", ADA, "--double-opt-in")
    assert again.exit_code == 0, again.output
    assert smtp_server.keys(ADA) == ["confirm"]
    # The link from the CLI's email works in the web app (one secret, one flow).
    web_env["REKINDLE_NOW"] = CONFIRM
    with app_client(web_env) as client:
        assert confirm(client, link).status_code == 200
    assert listed(web_env)[ADA]["status"] == "active"
    assert smtp_server.keys(ADA) == ["confirm", "welcome"]
    refused = script(web_env, "subscribers", "add", ADA, "--double-opt-in")
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert ADA in refused.stderr
    assert listed(web_env)[ADA]["status"] == "active"
    assert smtp_server.keys(ADA) == ["confirm", "welcome"]


def test_cli_double_opt_in_with_smtp_down_exits_75_and_send_delivers_it_once_later(
    web_env, smtp_server
):
    """With SMTP down `add --double-opt-in` exits 75, they stay pending; `send` delivers it once."""
    down = {**web_env, "REKINDLE_SMTP_URL": f"smtp://127.0.0.1:{free_port()}"}
    failed = script(down, "subscribers", "add", ADA, "--double-opt-in")
    assert failed.returncode == 75
    assert "Traceback" not in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert listed(web_env)[ADA]["status"] == "pending"
    later = iso(at(SIGNUP) + timedelta(minutes=10))
    assert send(web_env, later)["sent"] == 1
    assert send(web_env, later)["sent"] == 0
    assert smtp_server.keys(ADA) == ["confirm"]
    assert confirm_url(smtp_server.to(ADA)[0].message)


# --- the whole journey against `rekindle-mail serve` --------------------------------------


def test_full_journey_against_a_real_server(env, smtp_server, tmp_path):
    """Against `serve`: form, one confirmation, link and button, lesson 1, one-click; SIGTERM."""
    env.update(REKINDLE_SMTP_URL=smtp_server.url, REKINDLE_NOW=CONFIRM)
    log = tmp_path / "serve.log"
    with serving(env, log) as web:
        landing = web.get("/")
        assert landing.status == 200 and 'name="website"' in landing.body
        assert landing.headers["referrer-policy"] == "same-origin"
        form = {"email": ADA, "name": "Ada", "timezone": NY, "website": ""}
        for _ in range(3):
            answer = web.post("/subscribe", form, Origin=BASE_URL)
            assert answer.status == 200 and "Check your inbox" in answer.body
        poll(lambda: smtp_server.to(ADA), "the confirmation")
        assert listed(env)[ADA]["status"] == "pending"
        link = path(confirm_url(smtp_server.to(ADA)[0].message))
        assert web.request("HEAD", link).status == 200  # `curl -I`, a link scanner
        button = web.get(link)
        assert button.status == 200
        assert Page(button.body).one("form", action=link)["method"] == "post"
        assert listed(env)[ADA]["status"] == "pending"
        answer = web.post(link, {}, Origin=BASE_URL)
        assert answer.status == 200 and "You’re in" in answer.body
        row = listed(env)[ADA]
        assert row["status"] == "active" and at(row["next_due"]) == LESSON_1
        poll(lambda: len(smtp_server.to(ADA)) == 2, "the welcome")
        assert smtp_server.keys(ADA) == ["confirm", "welcome"]
        assert send(env, LESSON_1)["sent"] == 1
        assert smtp_server.keys(ADA) == ["confirm", "welcome", "lesson-1"]
        lesson = smtp_server.to(ADA)[2].message
        assert str(lesson["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
        unsubscribe = path(unsubscribe_url(lesson))
        page = web.get(unsubscribe)
        assert page.status == 200 and "<form" in page.body
        assert listed(env)[ADA]["status"] == "active"
        answer = web.post(unsubscribe, ONE_CLICK)  # a mail provider's one-click: no Origin
        assert answer.status == 200 and "You’re unsubscribed" in answer.body
        assert listed(env)[ADA]["status"] == "unsubscribed"
        web.process.send_signal(signal.SIGTERM)
        try:
            code = web.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("serve did not exit on SIGTERM")
    assert code in (0, -signal.SIGTERM), code
    assert "Traceback" not in log.read_text()
    assert send(env, LESSON_1 + timedelta(days=7))["sent"] == 0


def test_serve_on_a_port_already_in_use_exits_1_with_one_clear_line(env):
    """`serve` on a taken port exits 1 with an `Error:` line, never a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = script(env, "serve", "--host", "127.0.0.1", "--port", port)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error:") and "in use" in last, done.stderr
