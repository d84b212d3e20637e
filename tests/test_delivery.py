"""docs/guarantees.md for one sending process, observed at a real SMTP server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from clirun import add_all as add
from clirun import listed, run, script, send, status
from mailer.ledger import claims, record
from mailer.ledger.batch import new_batch
from mailer.ledger.rules import LEASE, Claim, Unavailable
from mailer.store import db
from mailer.store.models import Delivery, DeliveryStatus
from mailserver import GreetingRefuser, MailServer, free_port, password_checker
from subscribers.models import Subscriber

# A Monday; every subscriber is in UTC, so lesson 1 is due at 09:00 that morning.
ADDED = "2026-03-02T08:00:00+00:00"
DUE_1 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MONDAY = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
WEEK = timedelta(days=7)


def iso(instant: datetime) -> str:
    return instant.isoformat()


@pytest.fixture
def mail_env(env: dict[str, str], smtp_server: MailServer) -> dict[str, str]:
    """CLI environment on SQLite, sending to the test SMTP server, subscribers added at ADDED."""
    return {**env, "REKINDLE_SMTP_URL": smtp_server.url, "REKINDLE_NOW": ADDED}


@pytest.fixture
def db_env(mail_env: dict[str, str], database_url: str) -> dict[str, str]:
    """`mail_env` on SQLite and on PostgreSQL."""
    return {**mail_env, "REKINDLE_DATABASE_URL": database_url}


def deliveries(env: dict[str, str], address: str) -> dict[str, dict[str, Any]]:
    result = run(env, "subscribers", "show", address, "--json")
    assert result.exit_code == 0, result.output
    return {d["key"]: d for d in json.loads(result.stdout)["deliveries"]}


def message_ids(server: MailServer, address: str) -> list[str]:
    return [str(m.message["Message-ID"]) for m in server.to(address)]


def counts(sent: int = 0, failed: int = 0, deferred: int = 0) -> dict[str, int]:
    return {"sent": sent, "failed": failed, "deferred": deferred}


def core(report: dict[str, Any]) -> dict[str, int]:
    return {k: report[k] for k in ("sent", "failed", "deferred")}


# --- the ledger: nothing twice ------------------------------------------------------------


def test_rerun_at_the_same_or_a_later_instant_sends_nothing_more(db_env, smtp_server):
    """A second `send` at the same instant, or later that day, delivers nothing already sent."""
    add(db_env, "ada@example.org", "bo@example.org")
    first = send(db_env, MONDAY)
    assert core(first) == counts(sent=2)
    assert all(type(first[k]) is int for k in ("sent", "failed", "deferred"))

    assert core(send(db_env, MONDAY)) == counts()
    assert core(send(db_env, MONDAY + timedelta(hours=3))) == counts()
    # Three days on, each gets lesson 1's mid-week reminder, once; no lesson again.
    assert core(send(db_env, MONDAY + timedelta(days=3))) == counts(sent=2)
    assert core(send(db_env, MONDAY + timedelta(days=3, hours=2))) == counts()
    assert smtp_server.keys("ada@example.org") == ["lesson-1", "reminder-1"]
    assert smtp_server.keys("bo@example.org") == ["lesson-1", "reminder-1"]

    summary = status(db_env, MONDAY + timedelta(days=3))
    assert summary["deliveries"]["lesson-1"]["sent"] == 2
    assert summary["deliveries"]["lesson-1"]["failed"] == 0
    shown = deliveries(db_env, "ada@example.org")["lesson-1"]
    assert shown["status"] == "sent"
    assert shown["attempts"] == 1
    assert shown["sent_at"] == iso(MONDAY)
    assert shown["message_id"] == message_ids(smtp_server, "ada@example.org")[0]
    assert {row["lessons_sent"] for row in listed(db_env).values()} == {1}


def test_dry_run_reports_what_is_due_but_sends_and_records_nothing(db_env, smtp_server):
    """`send --dry-run` counts the due lessons, sends none, and leaves the ledger untouched."""
    add(db_env, "ada@example.org", "bo@example.org")
    report = send(db_env, MONDAY, "--dry-run")
    assert core(report) == counts(sent=2)
    assert report["dry_run"] is True
    assert smtp_server.messages == []
    assert smtp_server.connections == 0
    assert deliveries(db_env, "ada@example.org") == {}
    assert status(db_env, MONDAY)["deliveries"] == {}
    assert {row["lessons_sent"] for row in listed(db_env).values()} == {0}
    assert {row["next_lesson"] for row in listed(db_env).values()} == {1}

    assert core(send(db_env, MONDAY)) == counts(sent=2)
    assert len(smtp_server.messages) == 2


def claim(session, sub_id, key, message_id, due, now):
    """Claim one lesson the way a run does (a batch of one)."""
    batch = new_batch(None, LEASE)  # no run owns it: only its lease says when it ends
    return claims.claim_lessons(session, batch, [(sub_id, key, message_id, due)], now)[sub_id]


def mark_sent(session, got, sub_id, now):
    """Record a 250 for a claimed lesson the way a run does; True if it was marked."""
    accepted = [record.Accepted(got.delivery_id, got.token, sub_id)]
    return got.delivery_id in record.record_accepted(session.connection(), accepted, now)


def test_claim_is_exclusive_and_a_sent_key_cannot_be_claimed_again(db_env):
    """Claiming one (subscriber, key) twice gives Unavailable; once it is sent, 'sent'."""
    add(db_env, "ada@example.org")
    engine = db.make_engine(db_env["REKINDLE_DATABASE_URL"])
    make_session = db.sessions(engine)
    try:
        with make_session() as one, make_session() as two:
            sub_id = one.scalar(select(Subscriber.id).where(Subscriber.email == "ada@example.org"))
            one.commit()
            assert sub_id is not None
            mid = "<lesson-1.test@example.org>"
            got = claim(one, sub_id, "lesson-1", mid, DUE_1, MONDAY)
            assert isinstance(got, Claim)

            again = claim(two, sub_id, "lesson-1", mid, DUE_1, MONDAY)
            assert isinstance(again, Unavailable)
            assert again.status == DeliveryStatus.SENDING

            assert mark_sent(one, got, sub_id, MONDAY)
            one.commit()
            after = claim(two, sub_id, "lesson-1", mid, DUE_1, MONDAY + WEEK)
            assert isinstance(after, Unavailable)
            assert after.status == "sent"
            assert after.sent_at == MONDAY

            # The database itself refuses a second row for the same (subscriber, key).
            two.add(
                Delivery(
                    subscriber_id=sub_id,
                    key="lesson-1",
                    status=DeliveryStatus.SENDING,
                    message_id=mid,
                    due_at=DUE_1,
                    attempts=0,
                    updated_at=MONDAY,
                )
            )
            with pytest.raises(IntegrityError):
                two.commit()
            two.rollback()
            rows = two.scalars(select(Delivery).where(Delivery.subscriber_id == sub_id)).all()
            assert [(r.key, r.status) for r in rows] == [("lesson-1", "sent")]
    finally:
        engine.dispose()


def test_a_live_claim_held_elsewhere_keeps_send_from_delivering_that_key(db_env, smtp_server):
    """While another process holds a lesson's claim, `send` reports it busy and does not send it."""
    add(db_env, "ada@example.org", "bo@example.org")
    engine = db.make_engine(db_env["REKINDLE_DATABASE_URL"])
    try:
        with db.sessions(engine)() as session:
            sub_id = session.scalar(
                select(Subscriber.id).where(Subscriber.email == "ada@example.org")
            )
            assert sub_id is not None
            got = claim(session, sub_id, "lesson-1", "<x@example.org>", DUE_1, MONDAY)
            assert isinstance(got, Claim)
    finally:
        engine.dispose()
    report = send(db_env, MONDAY)
    assert core(report) == counts(sent=1)
    assert report["busy"] == 1
    assert smtp_server.to("ada@example.org") == []
    assert smtp_server.keys("bo@example.org") == ["lesson-1"]
    assert status(db_env, MONDAY)["deliveries"]["lesson-1"]["sending"] == 1


# --- transient replies: deferred, retried with backoff, delivered once --------------------


@pytest.mark.parametrize(
    "reply", ["450 4.2.0 Mailbox busy", "451 4.7.1 Greylisted", "452 4.2.2 Over quota"]
)
def test_4xx_at_rcpt_defers_the_message_and_a_later_run_delivers_it_once(
    db_env, smtp_server, reply
):
    """A 4xx to RCPT defers that lesson (subscriber stays active); 10 minutes later it goes once."""
    add(db_env, "ada@example.org", "bo@example.org")
    smtp_server.script.rcpt_once["ada@example.org"] = [reply]

    report = send(db_env, MONDAY)
    assert core(report) == counts(sent=1, deferred=1)
    assert smtp_server.to("ada@example.org") == []
    assert smtp_server.keys("bo@example.org") == ["lesson-1"]
    row = listed(db_env)["ada@example.org"]
    assert (row["status"], row["lessons_sent"], row["next_lesson"]) == ("active", 0, 1)
    first = deliveries(db_env, "ada@example.org")["lesson-1"]
    assert first["status"] == "deferred"
    assert first["attempts"] == 1
    assert first["last_error"].startswith(reply[:3])
    assert first["next_attempt_at"] == iso(MONDAY + timedelta(minutes=5))
    summary = status(db_env, MONDAY)
    assert summary["deliveries"]["lesson-1"]["deferred"] == 1
    assert [f["email"] for f in summary["recent_failures"]] == ["ada@example.org"]

    assert core(send(db_env, MONDAY + timedelta(minutes=2))) == counts()  # backoff not over
    assert core(send(db_env, MONDAY + timedelta(minutes=10))) == counts(sent=1)
    assert core(send(db_env, MONDAY + timedelta(minutes=20))) == counts()
    assert smtp_server.keys("ada@example.org") == ["lesson-1"]
    assert message_ids(smtp_server, "ada@example.org") == [first["message_id"]]
    done = deliveries(db_env, "ada@example.org")["lesson-1"]
    assert (done["status"], done["attempts"]) == ("sent", 2)
    assert listed(db_env)["ada@example.org"]["lessons_sent"] == 1


@pytest.mark.parametrize(
    "fault", ["data 451 4.3.0 Local error in processing", "mail 451 4.3.2 System not accepting"]
)
def test_4xx_to_data_or_mail_defers_and_a_later_run_delivers_exactly_once(
    db_env, smtp_server, fault
):
    """A 4xx to DATA or MAIL defers the lesson; the retry delivers it once, same Message-ID."""
    add(db_env, "ada@example.org")
    stage, reply = fault.split(" ", 1)
    getattr(smtp_server.script, stage).append(reply)
    assert core(send(db_env, MONDAY)) == counts(deferred=1)
    assert smtp_server.messages == []
    first = deliveries(db_env, "ada@example.org")["lesson-1"]
    assert first["status"] == "deferred"
    assert listed(db_env)["ada@example.org"]["status"] == "active"

    assert core(send(db_env, MONDAY + timedelta(minutes=10))) == counts(sent=1)
    assert core(send(db_env, MONDAY + timedelta(hours=2))) == counts()
    assert message_ids(smtp_server, "ada@example.org") == [first["message_id"]]
    assert status(db_env, MONDAY + timedelta(hours=2))["deliveries"]["lesson-1"]["sent"] == 1


def test_dry_run_predicts_the_real_run_for_a_message_in_backoff(mail_env, smtp_server):
    """`send --dry-run` does not count a deferred message whose retry time has not come."""
    add(mail_env, "ada@example.org")
    smtp_server.script.rcpt_once["ada@example.org"] = ["451 4.7.1 Greylisted"]
    assert core(send(mail_env, MONDAY)) == counts(deferred=1)

    early = MONDAY + timedelta(minutes=2)
    preview = send(mail_env, early, "--dry-run")
    real = send(mail_env, early)
    assert core(real) == counts()
    assert (core(preview), preview["waiting"]) == (core(real), real["waiting"])

    later = MONDAY + timedelta(minutes=10)
    assert core(send(mail_env, later, "--dry-run")) == counts(sent=1)
    assert core(send(mail_env, later)) == counts(sent=1)


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_a_dropped_connection_defers_one_message_and_the_run_reconnects_for_the_rest(
    mail_env, smtp_server, stage
):
    """A hang-up mid-run defers that message only; the run reconnects and sends all others."""
    people = ["ada@example.org", "bo@example.org", "cy@example.org", "di@example.org"]
    add(mail_env, *people)
    if stage == "rcpt":
        dropped = "bo@example.org"
        smtp_server.script.rcpt_once[dropped] = ["drop"]
    else:
        dropped = "ada@example.org"  # the first DATA of the run belongs to the first subscriber
        smtp_server.script.data = ["drop"]

    assert core(send(mail_env, MONDAY)) == counts(sent=3, deferred=1)
    assert smtp_server.connections == 2
    assert smtp_server.to(dropped) == []
    for address in people:
        if address != dropped:
            assert smtp_server.keys(address) == ["lesson-1"], address
    assert deliveries(mail_env, dropped)["lesson-1"]["status"] == "deferred"
    mid = deliveries(mail_env, dropped)["lesson-1"]["message_id"]

    assert core(send(mail_env, MONDAY + timedelta(minutes=10))) == counts(sent=1)
    assert core(send(mail_env, MONDAY + timedelta(hours=4))) == counts()
    assert smtp_server.keys(dropped) == ["lesson-1"]
    assert message_ids(smtp_server, dropped) == [mid]
    assert len(smtp_server.messages) == len(people)


def test_accept_then_drop_gives_at_most_one_duplicate_with_the_same_message_id(db_env, smtp_server):
    """The server kept the message but the client saw a drop: at most one copy more, same ID."""
    add(db_env, "ada@example.org")
    smtp_server.script.data = ["accept-then-drop"]
    assert core(send(db_env, MONDAY)) == counts(deferred=1)
    assert len(smtp_server.to("ada@example.org")) == 1  # the server did keep it

    for later in (timedelta(minutes=10), timedelta(hours=1), timedelta(days=1)):
        send(db_env, MONDAY + later)
    copies = message_ids(smtp_server, "ada@example.org")
    assert 1 <= len(copies) <= 2
    shown = deliveries(db_env, "ada@example.org")["lesson-1"]
    assert set(copies) == {shown["message_id"]}
    assert smtp_server.keys("ada@example.org") == ["lesson-1"] * len(copies)
    assert shown["status"] == "sent"
    assert listed(db_env)["ada@example.org"]["lessons_sent"] == 1


# --- permanent replies ---------------------------------------------------------------------


def test_550_at_rcpt_bounces_the_subscriber_who_is_never_mailed_again(db_env, smtp_server):
    """A 5xx to RCPT fails the lesson and bounces that subscriber; others in the run go out."""
    add(db_env, "ada@example.org", "gone@example.org", "cy@example.org")
    smtp_server.script.rcpt["gone@example.org"] = "550 5.1.1 No such user"

    report = send(db_env, MONDAY)
    assert core(report) == counts(sent=2, failed=1)
    assert report["bounced"] == 1
    assert smtp_server.keys("ada@example.org") == ["lesson-1"]
    assert smtp_server.keys("cy@example.org") == ["lesson-1"]
    rows = listed(db_env)
    assert rows["gone@example.org"]["status"] == "bounced"
    assert rows["gone@example.org"]["lessons_sent"] == 0
    assert rows["gone@example.org"]["next_due"] is None
    assert rows["ada@example.org"]["status"] == "active"
    failed = deliveries(db_env, "gone@example.org")["lesson-1"]
    assert failed["status"] == "failed"
    assert failed["last_error"].startswith("550")
    summary = status(db_env, MONDAY)
    assert summary["subscribers"]["bounced"] == 1
    by_status = summary["deliveries"]["lesson-1"]
    assert {k: v for k, v in by_status.items() if v} == {"sent": 2, "failed": 1}
    assert summary["recent_failures"][0]["email"] == "gone@example.org"

    # The address would be accepted now: any further attempt would show up at the server.
    smtp_server.script.rcpt.clear()
    for weeks in (1, 2, 3, 6):
        assert send(db_env, MONDAY + weeks * WEEK)["failed"] == 0
    assert smtp_server.to("gone@example.org") == []
    assert smtp_server.lessons("ada@example.org") == [f"lesson-{i}" for i in range(1, 6)]
    assert listed(db_env)["gone@example.org"]["status"] == "bounced"


@pytest.mark.parametrize(
    "fault",
    ["data 554 5.6.0 Message content rejected", "mail 552 5.3.4 Message size exceeds limit"],
)
def test_5xx_to_mail_or_data_fails_that_message_only_and_the_next_comes_a_week_later(
    db_env, smtp_server, fault
):
    """A 5xx to MAIL or DATA fails that lesson, does not bounce, and lesson 2 keeps the rhythm."""
    add(db_env, "ada@example.org")
    stage, reply = fault.split(" ", 1)
    getattr(smtp_server.script, stage).append(reply)

    report = send(db_env, MONDAY)
    assert core(report) == counts(failed=1)
    assert report["bounced"] == 0
    assert report["failures"][0]["reply"].startswith(reply[:3])
    row = listed(db_env)["ada@example.org"]
    assert (row["status"], row["lessons_sent"], row["next_lesson"]) == ("active", 0, 2)
    assert row["next_due"] == iso(DUE_1 + WEEK)
    shown = deliveries(db_env, "ada@example.org")["lesson-1"]
    assert (shown["status"], shown["attempts"]) == ("failed", 1)
    assert status(db_env, MONDAY)["deliveries"]["lesson-1"]["failed"] == 1

    assert core(send(db_env, MONDAY + timedelta(hours=1))) == counts()  # no retry of lesson 1
    assert core(send(db_env, MONDAY + timedelta(days=6, hours=2))) == counts()
    assert smtp_server.messages == []
    assert core(send(db_env, MONDAY + WEEK)) == counts(sent=1)
    assert smtp_server.keys("ada@example.org") == ["lesson-2"]
    assert smtp_server.messages[0].message["Date"].datetime == MONDAY + WEEK


# --- the session refused or unreachable: exit 75, nothing lost ----------------------------


def _no_listener() -> Iterator[str]:
    yield f"smtp://127.0.0.1:{free_port()}"


def _greeting(reply: str) -> Callable[[MailServer], Iterator[str]]:
    def broken(_server: MailServer) -> Iterator[str]:
        refuser = GreetingRefuser(reply)
        try:
            yield refuser.url
        finally:
            refuser.close()

    return broken


def _ehlo_refused(server: MailServer) -> Iterator[str]:
    server.script.ehlo = "550 5.7.1 You are not welcome here"
    try:
        yield server.url
    finally:
        server.script.ehlo = None


def _auth_refused(_server: MailServer) -> Iterator[str]:
    checker = password_checker("rekindle", "right")
    guarded = MailServer(authenticator=checker, auth_require_tls=False)
    guarded.start()
    try:
        yield f"smtp://rekindle:wrong@127.0.0.1:{guarded.port}"
    finally:
        guarded.stop()


BROKEN = {
    "nobody listening": lambda _server: _no_listener(),
    "greeting 554": _greeting("554 5.3.2 No service for you"),
    "greeting 421": _greeting("421 4.3.2 Too busy, try again later"),
    "ehlo 550": _ehlo_refused,
    "auth 535": _auth_refused,
}


@pytest.mark.parametrize("broken", list(BROKEN))
def test_a_refused_or_unreachable_session_exits_75_and_the_next_run_delivers_everything(
    mail_env, smtp_server, broken
):
    """No usable SMTP session: exit 75, one line on stderr, nothing sent; later all goes once."""
    people = ["ada@example.org", "bo@example.org"]
    add(mail_env, *people)
    source = BROKEN[broken](smtp_server)
    url = next(source)
    done = script({**mail_env, "REKINDLE_SMTP_URL": url}, "send", "--now", iso(MONDAY))
    source.close()
    assert done.returncode == 75, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: ")
    assert "127.0.0.1" in lines[0]
    assert smtp_server.messages == []
    rows = listed(mail_env)
    assert {(r["status"], r["lessons_sent"], r["next_lesson"]) for r in rows.values()} == {
        ("active", 0, 1)
    }

    assert core(send(mail_env, MONDAY + timedelta(minutes=15))) == counts(sent=2)
    for address in people:
        assert smtp_server.keys(address) == ["lesson-1"], address
    assert {r["lessons_sent"] for r in listed(mail_env).values()} == {1}


def test_smtp_server_down_keeps_everything_due_on_either_database(db_env, smtp_server):
    """Server down: `send` exits 75 and records nothing as sent, on SQLite and PostgreSQL."""
    add(db_env, "ada@example.org", "bo@example.org")
    down = {**db_env, "REKINDLE_SMTP_URL": f"smtp://127.0.0.1:{free_port()}"}
    done = script(down, "send", "--now", iso(MONDAY))
    assert done.returncode == 75, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert {r["lessons_sent"] for r in listed(db_env).values()} == {0}
    assert all(d["status"] != "sent" for d in deliveries(db_env, "ada@example.org").values())
    assert status(db_env, MONDAY)["due_now"] == 2

    assert core(send(db_env, MONDAY + timedelta(minutes=1))) == counts(sent=2)
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "ada@example.org",
        "bo@example.org",
    ]


# --- giving up before the next lesson --------------------------------------------------------


def test_a_retry_that_keeps_failing_is_given_up_before_the_next_lesson_is_due(db_env, smtp_server):
    """Endless 451s: lesson 1 is given up before lesson 2 is due; lesson 2 keeps the rhythm."""
    add(db_env, "ada@example.org", "grey@example.org")
    smtp_server.script.rcpt["grey@example.org"] = "451 4.7.1 Greylisted, try again later"
    due_2 = DUE_1 + WEEK

    reports = []
    when = MONDAY
    while when < due_2:  # cron every four hours for a week
        reports.append((when, send(db_env, when)))
        when += timedelta(hours=4)

    assert sum(r["sent"] for _, r in reports) == 2  # ada's lesson 1 and its mid-week reminder
    assert smtp_server.keys("ada@example.org") == ["lesson-1", "reminder-1"]
    assert sum(r["deferred"] for _, r in reports) >= 10  # it really was retried, with backoff
    gave_up = [(t, r) for t, r in reports if r["failed"]]
    assert len(gave_up) == 1
    assert gave_up[0][0] < due_2
    assert gave_up[0][1]["bounced"] == 0
    assert all(r["deferred"] == 0 for t, r in reports if t > gave_up[0][0])
    shown = deliveries(db_env, "grey@example.org")["lesson-1"]
    assert shown["status"] == "failed"
    assert "451" in shown["last_error"]
    assert shown["attempts"] == sum(r["deferred"] for _, r in reports) + 1
    row = listed(db_env)["grey@example.org"]
    assert (row["status"], row["lessons_sent"], row["next_lesson"]) == ("active", 0, 2)
    assert row["next_due"] == iso(due_2)
    summary = status(db_env, when)
    assert summary["deliveries"]["lesson-1"]["failed"] == 1
    assert summary["deliveries"]["lesson-1"]["sent"] == 1

    smtp_server.script.rcpt.clear()  # the relay takes the address again
    assert core(send(db_env, due_2 + timedelta(minutes=30))) == counts(sent=2)
    assert smtp_server.keys("grey@example.org") == ["lesson-2"]
    assert core(send(db_env, due_2 + timedelta(hours=4))) == counts()
    assert core(send(db_env, due_2 + WEEK + timedelta(minutes=30))) == counts(sent=2)
    assert smtp_server.keys("grey@example.org") == ["lesson-2", "lesson-3"]
    assert smtp_server.lessons("ada@example.org") == ["lesson-1", "lesson-2", "lesson-3"]
    dates = [m.message["Date"].datetime for m in smtp_server.to("grey@example.org")]
    assert dates == [due_2 + timedelta(minutes=30), due_2 + WEEK + timedelta(minutes=30)]
