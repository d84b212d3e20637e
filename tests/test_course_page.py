"""The course page `/course/<token>` (issue 14) as readers and attackers use it.

The Flask app on real SQLite and PostgreSQL databases with a real aiosmtpd server; the
links come from lessons really sent by `send`, and every schedule change is checked
with `subscribers list --json` and with what later `send` runs deliver. A real `serve`
answers the same way (the browser test, tests/test_course_browser.py, clicks through it).
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import pytest
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from clirun import listed, run, send
from mailer.runtime import Runtime
from mailer.store import db
from mailer.tokens import ERASE_SALT, Tokens
from mailer.web import courier_of, create_app
from mailserver import MailServer
from webserve import serving

BASE_URL = "https://rekindle.example.org"
ADA, BEA = "ada@example.org", "bea@example.org"
ADDED = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)  # Sunday night
DAY0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # Monday: lesson 1 at 09:00 UTC
COURSE = re.compile(re.escape(BASE_URL) + r"(/course/[A-Za-z0-9_-]+)")
LETTER = re.compile(re.escape(BASE_URL) + r"(/letters/[A-Za-z0-9_-]+)")
OUR_ORIGIN = {"Origin": BASE_URL, "Sec-Fetch-Site": "same-origin"}
CONTROLS = {
    "week-off": {},
    "pause": {},
    "resume": {},
    "next-now": {},
    "timezone": {"timezone": "Asia/Tokyo"},
    "time-of-day": {"time_of_day": "evening"},
    "reminders": {"reminders": "off"},
    "leave": {},
    "data": {},
    "erase": {},
    "erase/confirm": {"confirm": "x"},
}


def day(n: int, hour: int = 9, minute: int = 30) -> datetime:
    return (DAY0 + timedelta(days=n)).replace(hour=hour, minute=minute)


@contextmanager
def page_client(env: dict[str, str], now: datetime) -> Iterator[FlaskClient]:
    """A test client of create_app whose clock reads `now`; its worker finishes first."""
    runtime = Runtime(env={**env, "REKINDLE_NOW": now.isoformat()})
    app = create_app(runtime)
    try:
        yield app.test_client()
    finally:
        courier_of(app).wait_idle()
        courier_of(app).close()
        runtime.close()


@pytest.fixture
def readers(env, database_url, smtp_server) -> dict[str, str]:
    """Ada (UTC) and Bea (Asia/Tokyo) have lesson 1; on SQLite and PostgreSQL."""
    env.update(REKINDLE_DATABASE_URL=database_url, REKINDLE_SMTP_URL=smtp_server.url)
    for address, zone in ((ADA, "UTC"), (BEA, "Asia/Tokyo")):
        at = {**env, "REKINDLE_NOW": ADDED.isoformat()}
        done = run(
            at, "subscribers", "add", address, "--name", address[:3].title(), "--timezone", zone
        )
        assert done.exit_code == 0, done.output
    send(env, datetime(2026, 3, 2, 0, 30, tzinfo=UTC))  # Bea: 09:30 in Tokyo
    send(env, DAY0)
    assert smtp_server.lessons(ADA) == smtp_server.lessons(BEA) == ["lesson-1"]
    return env


def parts(server: MailServer, address: str, key: str) -> tuple[str, str]:
    (message,) = [m.message for m in server.to(address) if m.message["X-Rekindle-Key"] == key]
    return message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()


def course_link(server: MailServer, address: str, key: str = "lesson-1") -> str:
    """The path of the course-page link in `address`'s message `key` (the same in both parts)."""
    text, markup = parts(server, address, key)
    links = set(COURSE.findall(text))
    assert len(links) == 1 and links == set(COURSE.findall(markup)), (links, key)
    return links.pop()


def snapshot(env: dict[str, str]) -> dict[str, Any]:
    """Everything `list --json` and `show --json` say about everyone: equal means unchanged."""
    rows = listed(env)
    shown = {}
    for address in rows:
        result = run(env, "subscribers", "show", address, "--json")
        shown[address] = json.loads(result.stdout)
    return {"list": rows, "show": shown}


def text_of(response: Any) -> str:
    page = response.get_data(as_text=True)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", page)).split())


def standing(response: Any) -> str:
    found = re.search(r'<p id="standing">(.*?)</p>', response.get_data(as_text=True), re.S)
    assert found, response.get_data(as_text=True)
    return " ".join(unescape(re.sub(r"<[^>]+>", "", found.group(1))).split())


def post(client: FlaskClient, link: str, control: str, **form: str) -> Any:
    """A same-site POST of one control's form, as the page's button sends it."""
    return client.post(f"{link}/{control}", data=form, headers=OUR_ORIGIN)


def changed(client: FlaskClient, link: str, control: str, **form: str) -> Any:
    """POST a control: 303 back to the page, which confirms the change."""
    answer = post(client, link, control, **form)
    assert answer.status_code == 303, (control, answer.status_code, text_of(answer))
    assert answer.headers["Location"].endswith(f"{link}?done={control.split('/')[0]}") or (
        control == "reminders"
    )
    page = client.get(answer.headers["Location"])
    assert page.status_code == 200
    assert re.search(r'<p class="done" role="status">', page.get_data(as_text=True)), control
    return page


def due(env: dict[str, str], address: str) -> datetime | None:
    text = listed(env)[address]["next_due"]
    return datetime.fromisoformat(text) if text else None


def history(env: dict[str, str], address: str) -> list[tuple[str, str, str]]:
    result = run(env, "subscribers", "show", address, "--json")
    return [(h["change"], h["by"], h["via"]) for h in json.loads(result.stdout)["history"]]


# --- the reader's own page --------------------------------------------------------------


def test_the_page_says_where_the_reader_stands_in_their_own_zone(readers, smtp_server):
    """GET shows "read 1 of 6; letter 2, Stay committed, comes on Monday 9 March at 09:00
    your time", each reader in their own zone, noindex, with the usual headers."""
    with page_client(readers, day(1)) as client:
        ada = client.get(course_link(smtp_server, ADA))
        bea = client.get(course_link(smtp_server, BEA))
    assert ada.status_code == bea.status_code == 200
    assert standing(ada) == (
        "You have read 1 of 6 letters; letter 2, Stay committed, "
        "comes on Monday 9 March at 09:00 your time."
    )
    assert "comes on Monday 9 March at 09:00 your time" in standing(bea)
    assert "Letters come in the morning, from 09:00, Asia/Tokyo time." in text_of(bea)
    for response in (ada, bea):
        headers = response.headers
        assert headers["X-Robots-Tag"] == "noindex, nofollow"
        assert "no-store" in headers["Cache-Control"]
        assert headers["Referrer-Policy"] == "same-origin"
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert "form-action 'self'" in headers["Content-Security-Policy"]
    forms = re.findall(r'<form method="post" action="([^"]+)"', ada.get_data(as_text=True))
    link = course_link(smtp_server, ADA)
    assert [f.removeprefix(link + "/") for f in forms] == [
        "week-off",
        "pause",
        "next-now",
        "time-of-day",
        "timezone",
        "reminders",
        "data",
        "erase",
        "leave",
    ]


def test_every_control_changes_the_schedule_as_stated_and_is_recorded(readers, smtp_server):
    """week off (+7 days), evening (18:00 that day), Tokyo (the same local date), reminders off,
    next letter now (the next run in the window sends it; the next a week on): each checked in
    `subscribers list --json`, by the runs that follow, and in the history as the reader's."""
    link = course_link(smtp_server, ADA)
    bea_before = snapshot(readers)["show"][BEA]
    with page_client(readers, day(1)) as client:
        page = changed(client, link, "week-off")
        assert due(readers, ADA) == day(14, 9, 0)
        assert "comes on Monday 16 March at 09:00 your time" in standing(page)
        changed(client, link, "time-of-day", time_of_day="evening")
        assert due(readers, ADA) == day(14, 18, 0)
        page = changed(client, link, "timezone", timezone="Asia/Tokyo")
        assert listed(readers)[ADA]["next_due"] == "2026-03-16T18:00:00+09:00"
        assert "Letters come in the evening, from 18:00, Asia/Tokyo time." in text_of(page)
        changed(client, link, "reminders", reminders="off")
        assert listed(readers)[ADA]["reminders"] is False
    assert snapshot(readers)["show"][BEA] == bea_before  # Ada's token changes only Ada
    send(readers, day(3, 9, 0))  # reminder 1's time, in any zone: it is cancelled
    assert smtp_server.keys(ADA) == ["lesson-1"]

    asked = day(4, 8, 0)  # 17:00 in Tokyo: the evening window opens at 18:00
    with page_client(readers, asked) as client:
        page = changed(client, link, "next-now")
        assert "comes on Friday 6 March at 18:00 your time" in standing(page)
    assert due(readers, ADA) == asked
    assert send(readers, asked + timedelta(minutes=59))["sent_by_key"] == {}
    assert send(readers, day(4, 9, 0))["sent_by_key"] == {"lesson-2": 1}
    assert smtp_server.lessons(ADA) == ["lesson-1", "lesson-2"]
    assert listed(readers)[ADA]["next_due"] == "2026-03-13T18:00:00+09:00"  # a week on
    send(readers, day(11, 9, 0) - timedelta(minutes=1))
    send(readers, day(11, 9, 0))
    assert smtp_server.lessons(ADA) == ["lesson-1", "lesson-2", "lesson-3"]

    assert history(readers, ADA) == [
        (change, "reader", "course page")
        for change in ("week off", "time of day", "time zone", "reminders", "next letter now")
    ]


def test_pause_holds_lessons_and_reminders_and_resume_is_one_click(readers, smtp_server):
    """Paused on day 1: reminder 1 (day 3) and lesson 2 (day 7) never come; the page offers
    Resume and no week off; resumed on day 8, lesson 2 comes at the next window (day 9)."""
    link = course_link(smtp_server, ADA)
    with page_client(readers, day(1)) as client:
        page = changed(client, link, "pause")
    assert listed(readers)[ADA]["status"] == "paused"
    assert "Your course is paused: letter 2, Stay committed, waits until you come back" in (
        standing(page)
    )
    actions = re.findall(r'action="[^"]+/([a-z-]+)"', page.get_data(as_text=True))
    assert "resume" in actions and "week-off" not in actions and "next-now" not in actions
    for n in (3, 7):
        send(readers, day(n))
    assert smtp_server.keys(ADA) == ["lesson-1"]
    with page_client(readers, day(8)) as client:
        changed(client, link, "resume")
    assert (listed(readers)[ADA]["status"], due(readers, ADA)) == ("active", day(9, 9, 0))
    send(readers, day(9, 9, 0))
    assert smtp_server.keys(ADA) == ["lesson-1", "lesson-2"]
    assert [h[0] for h in history(readers, ADA)] == ["pause", "resume"]


def test_a_fifth_week_off_is_refused_on_the_page_and_changes_nothing(readers, smtp_server):
    """Four weeks off are fine; the fifth gets 409 with words for the reader, and no button."""
    link = course_link(smtp_server, ADA)
    with page_client(readers, day(1)) as client:
        for _ in range(4):
            page = changed(client, link, "week-off")
        assert "as far as one letter can" in text_of(page) and 'id="week-off"' not in (
            page.get_data(as_text=True)
        )
        before = snapshot(readers)
        refused = post(client, link, "week-off")
    assert refused.status_code == 409
    assert "already moved 4 weeks on" in text_of(refused)
    assert snapshot(readers) == before
    assert due(readers, ADA) == day(35, 9, 0)


def test_leave_is_one_click_unsubscribe_and_is_recorded(readers, smtp_server):
    """Leave: unsubscribed, reminder 1 cancelled, nothing more arrives; leaving again is 409."""
    link = course_link(smtp_server, ADA)
    with page_client(readers, day(1)) as client:
        page = changed(client, link, "leave")
        assert "You have left the course" in standing(page)
        assert 'id="leave"' not in page.get_data(as_text=True)
        assert post(client, link, "leave").status_code == 409
    assert listed(readers)[ADA]["status"] == "unsubscribed"
    for n in (3, 7, 14):
        send(readers, day(n))
    assert smtp_server.keys(ADA) == ["lesson-1"]
    assert history(readers, ADA) == [("unsubscribe", "reader", "course page")]


def test_download_is_the_readers_own_data_as_a_json_file(readers, smtp_server):
    """POST data: an attachment with profile, consent, every delivery and the history; no one
    else's address; GET of it is 405."""
    link = course_link(smtp_server, ADA)
    with page_client(readers, day(1)) as client:
        changed(client, link, "week-off")
        answer = post(client, link, "data")
        assert client.get(f"{link}/data").status_code == 405
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    assert answer.headers["Content-Disposition"].startswith("attachment;")
    data = json.loads(answer.get_data(as_text=True))
    assert set(data) == {"exported_at", "profile", "consent", "course", "deliveries", "history"}
    assert data["profile"] == {
        "email": ADA,
        "name": "Ada",
        "timezone": "UTC",
        "time_of_day": "morning",
        "mid_week_reminders": True,
    }
    assert data["consent"] == {
        "source": "operator",
        "signed_up_at": ADDED.isoformat(),
        "confirmed_at": None,
    }
    assert data["course"]["next_due"] == day(14, 9, 0).isoformat()
    assert [d["key"] for d in data["deliveries"]] == ["lesson-1", "reminder-1"]
    assert [h["change"] for h in data["history"]] == ["week off"]
    assert BEA not in answer.get_data(as_text=True)


# --- erasure ------------------------------------------------------------------------------


def _expired_confirmation(env: dict[str, str], subscriber_id: int, email: str) -> str:
    class HourAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 3600

    secret = _secret(env)
    digest = Tokens(secret).email_digest(email)
    return URLSafeTimedSerializer(secret, salt=ERASE_SALT, signer=HourAgo).dumps(
        [subscriber_id, digest]
    )


def _secret(env: dict[str, str]) -> str:
    runtime = Runtime(env=env)
    try:
        with runtime.session() as session:
            return db.installation_secret(session, None)
    finally:
        runtime.close()


def _id_of(link: str) -> int:
    token = link.rsplit("/", 1)[-1]
    return int.from_bytes(base64.urlsafe_b64decode(token + "=")[:4], "big")


def test_erase_asks_first_then_erases_once_and_says_goodbye_once(readers, smtp_server):
    """The first POST only asks; a wrong or hour-old confirmation erases nothing (400); the
    confirming POST erases as `subscribers remove` does and one goodbye goes to the address,
    without a ledger row; a second confirmation gets 410 and sends nothing."""
    link = course_link(smtp_server, ADA)
    letter = LETTER.search(parts(smtp_server, ADA, "lesson-1")[0]).group(1)
    with page_client(readers, day(1)) as client:
        asked = post(client, link, "erase")
        assert asked.status_code == 200 and "Erase everything?" in text_of(asked)
        confirm = re.search(r'name="confirm" value="([^"]+)"', asked.get_data(as_text=True))
        assert ADA in listed(readers)
        bea_link = course_link(smtp_server, BEA)
        bea_confirm = re.search(
            r'name="confirm" value="([^"]+)"',
            post(client, bea_link, "erase").get_data(as_text=True),
        ).group(1)
        for wrong in (
            "",
            "x" * 200,
            bea_confirm,
            _expired_confirmation(readers, _id_of(link), ADA),
        ):
            refused = post(client, link, "erase/confirm", confirm=wrong)
            assert refused.status_code == 400 and "nothing was erased" in text_of(refused)
        assert ADA in listed(readers)

        erased = post(client, link, "erase/confirm", confirm=confirm.group(1))
        assert erased.status_code == 200 and "Your data has been erased" in text_of(erased)
        again = post(client, link, "erase/confirm", confirm=confirm.group(1))
        assert again.status_code == 410
        assert client.get(link).status_code == 410
        assert client.get(letter).status_code == 410
    assert ADA not in listed(readers) and BEA in listed(readers)
    goodbyes = [m for m in smtp_server.to(ADA) if m.message["X-Rekindle-Key"] == "erased"]
    assert len(goodbyes) == 1
    message = goodbyes[0].message
    assert message["Subject"] == "Your data has been erased"
    text, markup = parts(smtp_server, ADA, "erased")
    assert "we have erased everything we kept about you" in text
    for body in (text, markup):
        assert "/course/" not in body and "/unsubscribe/" not in body and "/letters/" not in body
    keys = {row["key"] for row in json.loads(run(readers, "deliveries", "list", "--json").stdout)}
    assert "erased" not in keys


def test_erase_of_someone_the_operator_already_removed_sends_nothing(readers, smtp_server):
    """Removed by the operator between the two presses: the confirmation gets 410, no email."""
    link = course_link(smtp_server, ADA)
    with page_client(readers, day(1)) as client:
        asked = post(client, link, "erase").get_data(as_text=True)
        confirm = re.search(r'name="confirm" value="([^"]+)"', asked).group(1)
        assert run(readers, "subscribers", "remove", ADA).exit_code == 0
        assert post(client, link, "erase/confirm", confirm=confirm).status_code == 410
    assert smtp_server.keys(ADA) == ["lesson-1"]


# --- attackers ----------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def forged_tokens(env: dict[str, str], server: MailServer) -> dict[str, str]:
    """Tokens an attacker might try on Ada's page: changed, spliced, borrowed, cut."""
    ada = course_link(server, ADA).rsplit("/", 1)[1]
    bea = course_link(server, BEA).rsplit("/", 1)[1]
    ada_id, bea_id = _id_of(ada), _id_of(bea)
    flipped = bytearray(_raw(ada))
    flipped[-1] ^= 0x01
    secret = _secret(env)
    letter = LETTER.search(parts(server, ADA, "lesson-1")[0]).group(1).rsplit("/", 1)[1]
    unsubscribe = re.search(r"/unsubscribe/([^\s>]+)", parts(server, ADA, "lesson-1")[0])
    return {
        "signature changed": _b64(bytes(flipped)),
        "Bea's id with Ada's signature": _b64(bea_id.to_bytes(4, "big") + _raw(ada)[4:]),
        "Ada's id with Bea's signature": _b64(ada_id.to_bytes(4, "big") + _raw(bea)[4:]),
        "Ada's id signed over Bea's address": Tokens(secret).course(ada_id, BEA),
        "signed with another secret": Tokens("another secret").course(ada_id, ADA),
        "cut short": ada[:-2],
        "padded": ada + "=",
        "a letters-page token": letter,
        "an unsubscribe token": unsubscribe.group(1),
        "not base64": "not*a*token*at*all*no*no*no",
        "very long": "A" * 5000,
    }


def test_forged_and_foreign_tokens_get_400_and_change_nothing(readers, smtp_server):
    """Every forged or borrowed token: 400 for the page and for every control, nothing changes
    and nothing is sent; Bea's genuine link still opens only Bea's page."""
    forged = forged_tokens(readers, smtp_server)
    before, mail = snapshot(readers), len(smtp_server.messages)
    with page_client(readers, day(1)) as client:
        for what, token in forged.items():
            page = client.get(f"/course/{token}")
            assert page.status_code == 400, what
            assert "Ada" not in text_of(page) and "Bea" not in text_of(page)
            assert "not valid" in text_of(page)
            for control, form in CONTROLS.items():
                answer = post(client, f"/course/{token}", control, **form)
                assert answer.status_code == 400, (what, control, answer.status_code)
        assert "Tokyo" in text_of(client.get(course_link(smtp_server, BEA)))
    assert snapshot(readers) == before
    assert len(smtp_server.messages) == mail


def test_get_and_head_change_nothing_and_controls_answer_only_post(readers, smtp_server):
    """GET and HEAD of the page (and of each control's address, 405) change nothing."""
    link = course_link(smtp_server, ADA)
    before, mail = snapshot(readers), len(smtp_server.messages)
    with page_client(readers, day(1)) as client:
        for _ in range(3):
            assert client.get(link).status_code == 200
            head = client.head(link)
            assert head.status_code == 200 and head.get_data() == b""
            assert head.headers["X-Robots-Tag"] == "noindex, nofollow"
        for control in CONTROLS:
            assert client.get(f"{link}/{control}").status_code == 405, control
            assert client.head(f"{link}/{control}").status_code == 405, control
        assert client.get(f"{link}?done=week-off").status_code == 200
        assert client.put(link).status_code == 405
    assert snapshot(readers) == before
    assert len(smtp_server.messages) == mail


CROSS_SITE = {
    "another-site": {"Origin": "https://evil.example"},
    "opaque-null": {"Origin": "null"},
    "fetch-metadata": {"Sec-Fetch-Site": "cross-site"},
    "fetch-metadata-with-our-origin": {"Origin": BASE_URL, "Sec-Fetch-Site": "cross-site"},
}


@pytest.mark.parametrize("headers", CROSS_SITE.values(), ids=CROSS_SITE.keys())
def test_a_post_from_another_site_gets_403_and_changes_nothing(readers, smtp_server, headers):
    """Every control posted from another site: 403, nothing changes, nothing is sent."""
    link = course_link(smtp_server, ADA)
    before, mail = snapshot(readers), len(smtp_server.messages)
    with page_client(readers, day(1)) as client:
        for control, form in CONTROLS.items():
            answer = client.post(f"{link}/{control}", data=form, headers=headers)
            assert answer.status_code == 403, control
            assert "another site" in text_of(answer)
    assert snapshot(readers) == before
    assert len(smtp_server.messages) == mail


@pytest.mark.parametrize(
    ("control", "form"),
    [
        ("timezone", {"timezone": "Mars/Olympus"}),
        ("timezone", {"timezone": "Europe/London" * 500}),
        ("timezone", {"timezone": "posixrules"}),  # a zoneinfo name the page does not offer
        ("timezone", {}),
        ("time-of-day", {"time_of_day": "noon"}),
        ("time-of-day", {}),
        ("reminders", {"reminders": "maybe"}),
    ],
    ids=["unknown-zone", "huge-zone", "unoffered-zone", "no-zone", "noon", "no-time", "maybe"],
)
def test_a_value_the_page_does_not_offer_gets_400_and_changes_nothing(
    readers, smtp_server, control, form
):
    """A form value outside the page's choices: 400, the page with a fixed message, no echo."""
    link = course_link(smtp_server, ADA)
    before = snapshot(readers)
    with page_client(readers, day(1)) as client:
        answer = post(client, link, control, **form)
    assert answer.status_code == 400
    assert "Please choose one of the options offered." in text_of(answer)
    assert "Mars" not in text_of(answer) and "noon" not in text_of(answer)
    assert snapshot(readers) == before


def test_a_body_over_16_kb_gets_413_and_changes_nothing(readers, smtp_server):
    """An oversized control post is refused before it is read."""
    link = course_link(smtp_server, ADA)
    before = snapshot(readers)
    with page_client(readers, day(1)) as client:
        answer = post(client, link, "timezone", timezone="A" * 20_000)
    assert answer.status_code == 413
    assert snapshot(readers) == before


def test_a_real_serve_answers_get_head_same_site_and_cross_site_posts(
    readers, smtp_server, tmp_path
):
    """Against `rekindle-mail serve`: GET/HEAD 200, a same-site week off 303, cross-site 403."""
    link = course_link(smtp_server, ADA)
    env = {**readers, "REKINDLE_NOW": day(1).isoformat()}
    with serving(env, tmp_path / "serve.log") as web:
        assert web.get(link).status == 200
        assert web.request("HEAD", link).status == 200
        assert web.post(f"{link}/week-off", {}, Origin="https://evil.example").status == 403
        assert due(readers, ADA) == day(7, 9, 0)
        moved = web.post(f"{link}/week-off", {}, Origin=BASE_URL)
        assert moved.status == 303 and moved.headers["location"].endswith("?done=week-off")
    assert due(readers, ADA) == day(14, 9, 0)


def test_a_change_while_the_next_letter_is_on_its_way_is_refused_and_nothing_is_lost(
    env, database_url, tmp_path
):
    """While a `send` holds lesson 2 at the server (its reply held back), a week off or a new
    zone is refused (409 on the page, exit 1 in the CLI) and changes nothing; the lesson
    goes once, and the next one a week later, as if nobody had asked."""
    import subprocess

    from clirun import SCRIPT
    from slowserver import SlowServer

    server = SlowServer()
    server.start()
    try:
        env.update(REKINDLE_DATABASE_URL=database_url, REKINDLE_SMTP_URL=server.url)
        at = {**env, "REKINDLE_NOW": ADDED.isoformat()}
        assert run(at, "subscribers", "add", ADA, "--timezone", "UTC").exit_code == 0
        send(env, DAY0)
        link = course_link(server, ADA)
        server.handler.hold_at = 2  # lesson 2: kept, its 250 held back
        assert SCRIPT is not None
        running = subprocess.Popen(
            [SCRIPT, "send", "--now", day(7).isoformat()],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert server.handler.holding.wait(30), "the send never reached the server"
        before = snapshot(env)
        with page_client(env, day(7)) as client:
            refused = post(client, link, "week-off")
            assert refused.status_code == 409
            assert "on its way to you right now" in text_of(refused)
            assert post(client, link, "timezone", timezone="Asia/Tokyo").status_code == 409
        moved = run(
            {**env, "REKINDLE_NOW": day(7).isoformat()},
            "subscribers",
            "set",
            ADA,
            "--timezone",
            "Asia/Tokyo",
        )
        assert moved.exit_code == 1 and "being sent right now" in moved.output
        assert snapshot(env) == before
        server.handler.release.set()
        output, _ = running.communicate(timeout=60)
        assert running.returncode == 0, output
    finally:
        server.handler.release.set()
        server.stop()
    assert server.lessons(ADA) == ["lesson-1", "lesson-2"]
    assert due(env, ADA) == day(14, 9, 0)
    assert history(env, ADA) == []
