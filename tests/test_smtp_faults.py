"""docs/guarantees.md: what every SMTP reply at every stage does to a run, from a scripted relay.

The relay is a real aiosmtpd server on loopback (tests/mailserver.py) that answers
the greeting, EHLO, AUTH, MAIL, RCPT, the DATA command or the final dot with a
chosen reply, hangs up, or falls silent until the client times out. Single faults
for one subscriber and their retries are in test_delivery.py; here the fault hits
the middle of a run, at every stage, and the tests watch the rest of the run, the
connections, and the weeks after.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import mailer.transport.smtp as smtp_transport
from clirun import add_all as add
from clirun import listed, run, script, send, status
from mailserver import DROP, PASS, STALL, MailServer, password_checker

# A Monday; every subscriber is in UTC, so lesson 1 is due at 09:00 that morning.
ADDED = "2026-03-02T08:00:00+00:00"
DUE_1 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MONDAY = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
RETRY = MONDAY + timedelta(minutes=10)  # after the first backoff (5 minutes)
WEEK = timedelta(days=7)
ADA, BO, CY = "ada@example.org", "bo@example.org", "cy@example.org"
USER, PASSWORD = "rekindle", "right-password"
TIMEOUT = 1.0  # the client's SMTP timeouts in tests that make the server fall silent


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


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process client gives up on a silent server after TIMEOUT seconds, not minutes."""
    monkeypatch.setattr(smtp_transport, "CONNECT_TIMEOUT", TIMEOUT)
    monkeypatch.setattr(smtp_transport, "SESSION_TIMEOUT", TIMEOUT)


def deliveries(env: dict[str, str], address: str) -> dict[str, dict[str, Any]]:
    result = run(env, "subscribers", "show", address, "--json")
    assert result.exit_code == 0, result.output
    return {d["key"]: d for d in json.loads(result.stdout)["deliveries"]}


def counts(sent: int = 0, failed: int = 0, deferred: int = 0) -> dict[str, int]:
    return {"sent": sent, "failed": failed, "deferred": deferred}


def core(report: dict[str, Any]) -> dict[str, int]:
    return {k: report[k] for k in ("sent", "failed", "deferred")}


def message_ids(server: MailServer, address: str, *, seen: bool = False) -> list[str]:
    """Message-IDs of what `address` was sent: accepted copies, or every copy the server read."""
    copies = server.seen if seen else server.messages
    return [str(m.message["Message-ID"]) for m in copies if address in m.rcpt_tos]


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("Error: "), stderr
    return lines[0]


# --- every stage of a message x every reply -------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """A scripted reply and what docs/guarantees.md says it means."""

    reply: str
    permanent: bool  # 5xx
    hangs_up: bool  # the connection is gone afterwards: the run must reconnect
    shows: str  # what the delivery's last_error must contain


FAULTS = {
    "450": Fault("450 4.2.0 Mailbox busy", False, False, "450"),
    "451": Fault("451 4.7.1 Greylisted, try again later", False, False, "451"),
    "452": Fault("452 4.3.1 Insufficient system storage", False, False, "452"),
    "421": Fault("421 4.3.2 Service shutting down", False, True, "421"),
    "drop": Fault(DROP, False, True, "lost"),
    "timeout": Fault(STALL, False, True, "timed out"),
    "550": Fault("550 5.7.1 Rejected by policy", True, False, "550"),
    "554": Fault("554 5.7.1 Transaction failed", True, False, "554"),
}
STAGES = ["mail", "rcpt", "data-cmd", "dot"]  # "data-cmd": the DATA command; "dot": the final dot


def script_fault(server: MailServer, stage: str, reply: str) -> None:
    """Give `reply` to BO's message at `stage`: the second message of the run (ADA's is first)."""
    if stage == "mail":
        server.script.mail = [PASS, reply]
    elif stage == "rcpt":
        server.script.rcpt_once[BO] = [reply]
    elif stage == "data-cmd":
        server.script.data_cmd = [PASS, reply]
    else:
        server.script.data = [PASS, reply]


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("stage", STAGES)
def test_a_fault_at_any_stage_hits_one_message_and_the_run_goes_on(
    mail_env, smtp_server, request, stage, fault
):
    """A reply, hang-up or silence to the 2nd of 3 messages affects that one only, as §5 says.

    4xx, a dropped connection and a timeout defer it (a later run delivers it once, with
    the same Message-ID); 421, a drop and a timeout make the run reconnect. 5xx to RCPT
    bounces the subscriber for good; 5xx to MAIL, DATA or the final dot fails that lesson
    only, and the next comes a week later.
    """
    what = FAULTS[fault]
    if fault == "timeout":
        request.getfixturevalue("short_timeouts")
        smtp_server.script.stall_seconds = 10 * TIMEOUT
    add(mail_env, ADA, BO, CY)
    script_fault(smtp_server, stage, what.reply)

    report = send(mail_env, MONDAY)
    for address in (ADA, CY):
        assert smtp_server.keys(address) == ["lesson-1"], (address, report)
    assert smtp_server.to(BO) == []
    reconnects = 1 if what.hangs_up else 0
    assert smtp_server.connections == 1 + reconnects
    first = deliveries(mail_env, BO)["lesson-1"]
    assert what.shows in first["last_error"], first
    assert first["attempts"] == 1
    # Every copy the server read (a fault at the final dot) carries the ledger's Message-ID.
    assert set(message_ids(smtp_server, BO, seen=True)) <= {first["message_id"]}
    row = listed(mail_env)[BO]

    if not what.permanent:
        assert core(report) == counts(sent=2, deferred=1)
        assert (first["status"], first["next_attempt_at"]) == (
            "deferred",
            iso(MONDAY + timedelta(minutes=5)),
        )
        assert (row["status"], row["lessons_sent"], row["next_lesson"]) == ("active", 0, 1)
        assert core(send(mail_env, RETRY)) == counts(sent=1)
        assert core(send(mail_env, RETRY + timedelta(hours=2))) == counts()
        assert smtp_server.keys(BO) == ["lesson-1"]
        assert message_ids(smtp_server, BO) == [first["message_id"]]
        assert (deliveries(mail_env, BO)["lesson-1"]["status"], len(smtp_server.messages)) == (
            "sent",
            3,
        )
        assert listed(mail_env)[BO]["lessons_sent"] == 1
        return

    assert core(report) == counts(sent=2, failed=1)
    assert first["status"] == "failed"
    if stage == "rcpt":
        assert report["bounced"] == 1
        assert (row["status"], row["next_due"]) == ("bounced", None)
        for weeks in (1, 2):
            send(mail_env, MONDAY + weeks * WEEK)
        assert smtp_server.to(BO) == []  # the script is spent: it would have been accepted
        assert smtp_server.lessons(ADA) == ["lesson-1", "lesson-2", "lesson-3"]
        assert listed(mail_env)[BO]["status"] == "bounced"
        return
    assert report["bounced"] == 0
    assert (row["status"], row["lessons_sent"], row["next_lesson"]) == ("active", 0, 2)
    assert row["next_due"] == iso(DUE_1 + WEEK)
    assert core(send(mail_env, MONDAY + timedelta(hours=1))) == counts()  # no retry
    assert send(mail_env, MONDAY + WEEK)["sent"] == 3
    assert smtp_server.keys(BO) == ["lesson-2"]
    assert smtp_server.lessons(CY) == ["lesson-1", "lesson-2"]


def test_a_server_gone_at_the_reconnect_stops_the_run_with_75_and_loses_nothing(
    mail_env, smtp_server
):
    """A hang-up mid-run, then a 421 greeting on reconnect: exit 75, the run's work so far kept.

    ADA's lesson was accepted and stays sent; BO's is deferred; CY's was never tried.
    The next run delivers BO and CY once and ADA nothing more.
    """
    add(mail_env, ADA, BO, CY)
    smtp_server.script.rcpt_once[BO] = [DROP]
    smtp_server.script.greeting = [PASS, "421 4.3.2 Shutting down, try later"]

    done = script(mail_env, "send", "--now", iso(MONDAY), "--json")
    assert done.returncode == 75, (done.stdout, done.stderr)
    line = one_error_line(done.stderr)
    assert "421" in line and "127.0.0.1" in line
    assert core(json.loads(done.stdout)) == counts(sent=1, deferred=1)
    assert smtp_server.connections == 2
    assert smtp_server.keys(ADA) == ["lesson-1"]
    rows = listed(mail_env)
    assert [rows[a]["lessons_sent"] for a in (ADA, BO, CY)] == [1, 0, 0]
    assert deliveries(mail_env, BO)["lesson-1"]["status"] == "deferred"
    assert all(d["status"] != "sent" for d in deliveries(mail_env, CY).values())

    assert core(send(mail_env, RETRY)) == counts(sent=2)
    assert core(send(mail_env, RETRY + timedelta(hours=1))) == counts()
    for address in (ADA, BO, CY):
        assert smtp_server.keys(address) == ["lesson-1"], address


# --- the whole session refused: greeting, EHLO, AUTH -------------------------------------


@pytest.fixture
def auth_server() -> Iterator[MailServer]:
    """A scripted server that wants a login (plain AUTH is fine on loopback)."""
    server = MailServer(authenticator=password_checker(USER, PASSWORD), auth_require_tls=False)
    server.start()
    yield server
    server.stop()


def refuse_session(server: MailServer, stage: str, reply: str) -> None:
    if stage == "greeting":
        server.script.greeting = [reply]
    elif stage == "ehlo":
        server.script.ehlo = reply
    else:
        server.script.auth = reply


SESSION_REPLIES = {
    "421": "421 4.3.2 Too busy, try again later",
    "554": "554 5.7.1 Not for you",
    "drop": DROP,
}


@pytest.mark.parametrize("reply", list(SESSION_REPLIES))
@pytest.mark.parametrize("stage", ["greeting", "ehlo", "auth"])
def test_a_refused_session_exits_75_and_a_later_run_delivers_everything_once(
    env, auth_server, stage, reply
):
    """421, 5xx or a hang-up at greeting, EHLO or AUTH: exit 75, one line, nothing sent.

    Nothing is recorded as sent or failed, and the next run against a healthy server
    delivers each lesson once.
    """
    people = [ADA, BO, CY]
    mail_env = {
        **env,
        "REKINDLE_SMTP_URL": f"smtp://{USER}:{PASSWORD}@127.0.0.1:{auth_server.port}",
        "REKINDLE_NOW": ADDED,
    }
    add(mail_env, *people)
    refuse_session(auth_server, stage, SESSION_REPLIES[reply])

    done = script(mail_env, "send", "--now", iso(MONDAY))
    assert done.returncode == 75, (done.stdout, done.stderr)
    line = one_error_line(done.stderr)
    assert "127.0.0.1" in line
    assert PASSWORD not in done.stderr + done.stdout
    if reply != "drop":
        assert SESSION_REPLIES[reply][:3] in line
    assert auth_server.messages == [] and auth_server.seen == []
    rows = listed(mail_env)
    assert {(r["status"], r["lessons_sent"], r["next_lesson"]) for r in rows.values()} == {
        ("active", 0, 1)
    }
    assert all(d["status"] != "sent" for d in deliveries(mail_env, ADA).values())
    assert status(mail_env, MONDAY)["due_now"] == 3

    auth_server.script.ehlo = auth_server.script.auth = None
    assert core(send(mail_env, MONDAY + timedelta(minutes=15))) == counts(sent=3)
    assert core(send(mail_env, MONDAY + timedelta(hours=2))) == counts()
    for address in people:
        assert auth_server.keys(address) == ["lesson-1"], address


QUIT_CASES = {
    # refusal -> (server options, scripted reply or None, URL scheme, user:password or None)
    "greeting-554": ({}, ("greeting", "554 5.3.2 No service for you"), "smtp", None),
    "ehlo-554": ({}, ("ehlo", "554 5.7.1 Not for you"), "smtp", None),
    "ehlo-550": ({}, ("ehlo", "550 5.7.1 Go away"), "smtp", None),
    "starttls-454": ({"tls": True}, ("starttls", "454 4.7.0 TLS not available"), "starttls", None),
    "starttls-not-offered": ({}, None, "starttls", None),
    "auth-535": ({"auth": True}, None, "smtp", f"{USER}:wrong-password"),
    "auth-454": (
        {"auth": True},
        ("auth", "454 4.7.0 Try again later"),
        "smtp",
        f"{USER}:{PASSWORD}",
    ),
    "auth-none-offered": ({}, None, "smtp", f"{USER}:{PASSWORD}"),
}


def quit_server(options: dict[str, bool]) -> MailServer:
    """A scripted server: with a STARTTLS it can refuse, or wanting a login, as asked."""
    kwargs: dict[str, Any] = {}
    if options.get("tls"):
        kwargs["tls_context"] = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # never reached
    if options.get("auth"):
        kwargs.update(authenticator=password_checker(USER, PASSWORD), auth_require_tls=False)
    return MailServer(**kwargs).start()


@pytest.mark.parametrize("refusal", list(QUIT_CASES))
def test_a_session_refused_after_the_greeting_ends_with_quit(env, refusal):
    """A refused greeting, EHLO, STARTTLS or AUTH (or none offered): the client says QUIT
    before it hangs up (RFC 5321 §4.1.1.10), then the run exits 75 with one line."""
    options, scripted, scheme, login = QUIT_CASES[refusal]
    server = quit_server(options)
    try:
        if scripted is not None:
            stage, reply = scripted
            if stage == "greeting":
                server.script.greeting = [reply]
            else:
                setattr(server.script, stage, reply)
        userinfo = f"{login}@" if login else ""
        url = f"{'smtp+starttls' if scheme == 'starttls' else 'smtp'}://{userinfo}127.0.0.1:{server.port}"
        mail_env = {**env, "REKINDLE_SMTP_URL": url, "REKINDLE_NOW": ADDED}
        add(mail_env, ADA)

        done = script(mail_env, "send", "--now", iso(MONDAY))
        assert done.returncode == 75, (done.stdout, done.stderr)
        line = one_error_line(done.stderr)
        assert "127.0.0.1" in line
        if scripted is not None:
            assert scripted[1][:3] in line
        assert server.messages == []
        assert server.connections >= 1
        assert server.quits == server.connections, (server.quits, server.connections)
    finally:
        server.stop()


def test_a_refused_rset_mid_run_ends_that_session_with_quit_and_the_run_goes_on(
    mail_env, smtp_server
):
    """After a 550 to BO's RCPT the client's RSET is refused: it says QUIT on that connection,
    opens a new one for CY, and QUITs that one at the end of the run."""
    add(mail_env, ADA, BO, CY)
    smtp_server.script.rcpt[BO] = "550 5.1.1 No such user"
    smtp_server.script.rset = "554 5.5.1 No more from you"
    report = send(mail_env, MONDAY)
    assert core(report) == counts(sent=2, failed=1)
    assert smtp_server.keys(ADA) == smtp_server.keys(CY) == ["lesson-1"]
    assert (smtp_server.connections, smtp_server.quits) == (2, 2)


def test_a_421_ends_the_session_without_a_quit(env, auth_server):
    """After a 421 the server has closed the channel: the client hangs up without a QUIT."""
    auth_server.script.ehlo = "421 4.3.2 Shutting down"
    mail_env = {**env, "REKINDLE_SMTP_URL": auth_server.url, "REKINDLE_NOW": ADDED}
    add(mail_env, ADA)
    done = script(mail_env, "send", "--now", iso(MONDAY))
    assert done.returncode == 75, (done.stdout, done.stderr)
    assert "421" in one_error_line(done.stderr)
    assert auth_server.quits == 0


@pytest.mark.parametrize("stage", ["greeting", "ehlo"])
def test_a_silent_server_at_session_start_exits_75(mail_env, smtp_server, short_timeouts, stage):
    """A server that never greets, or never answers EHLO, is a timeout: exit 75, nothing sent."""
    smtp_server.script.stall_seconds = 10 * TIMEOUT
    add(mail_env, ADA, BO)
    refuse_session(smtp_server, stage, STALL)

    result = run(mail_env, "send", "--now", iso(MONDAY))
    assert result.exit_code == 75, result.output
    assert "timed out" in result.stderr
    assert "Traceback" not in result.output
    assert smtp_server.messages == []
    assert {r["lessons_sent"] for r in listed(mail_env).values()} == {0}

    smtp_server.script.ehlo = None
    assert core(send(mail_env, MONDAY + timedelta(minutes=15))) == counts(sent=2)
    assert smtp_server.keys(ADA) == smtp_server.keys(BO) == ["lesson-1"]


# --- SMTPUTF8 -----------------------------------------------------------------------------


def test_an_address_needing_smtputf8_fails_alone_at_a_server_without_it(env):
    """Without SMTPUTF8 at the server, only the non-ASCII addresses' lessons fail; others go.

    Those subscribers are not bounced (the address is not known to be bad) and their
    next lesson is due a week later; the server never sees a message for them.
    """
    server = MailServer(enable_SMTPUTF8=False).start()
    try:
        mail_env = {**env, "REKINDLE_SMTP_URL": server.url, "REKINDLE_NOW": ADDED}
        wide = ["josé@example.org", "用户@例子.广告"]
        add(mail_env, ADA, wide[0], BO, wide[1], CY)
        report = send(mail_env, MONDAY)
        assert core(report) == counts(sent=3, failed=2)
        assert report["bounced"] == 0
        assert sorted(f["email"] for f in report["failures"]) == sorted(wide)
        assert all("SMTPUTF8" in f["reply"] for f in report["failures"])
        assert server.connections == 1
        for address in (ADA, BO, CY):
            assert server.keys(address) == ["lesson-1"], address
        assert {a for m in server.seen for a in m.rcpt_tos} == {ADA, BO, CY}
        rows = listed(mail_env)
        for address in wide:
            row = rows[address]
            assert (row["status"], row["lessons_sent"], row["next_lesson"]) == ("active", 0, 2)
            assert deliveries(mail_env, address)["lesson-1"]["status"] == "failed"
    finally:
        server.stop()


# --- the acceptance scenario ---------------------------------------------------------------


def test_a_flaky_relay_loses_nothing_and_sends_nothing_twice(db_env, smtp_server):
    """451 to one DATA, 450 to one recipient, 550 to another, one dropped connection.

    Later runs deliver every message exactly once with the Message-ID of its first
    attempt; the 550 address is bounced and never mailed again; every other subscriber
    gets lesson 1 once, then lessons 2 and 3 on time. On SQLite and PostgreSQL.
    """
    people = [f"{name}@example.org" for name in ("ada", "bo", "cy", "di", "eve", "fay", "gus")]
    ada, cy, di, eve = people[0], people[2], people[3], people[4]
    add(db_env, *people)
    smtp_server.script.data_cmd = ["451 4.3.0 Try again later"]  # ada's DATA: the first
    smtp_server.script.rcpt_once[cy] = ["450 4.2.1 Mailbox busy"]
    smtp_server.script.rcpt[di] = "550 5.1.1 No such user"
    smtp_server.script.data = [PASS, DROP]  # final dots: bo's, then eve's

    first = send(db_env, MONDAY)
    assert core(first) == counts(sent=3, failed=1, deferred=3), first
    assert first["bounced"] == 1
    assert smtp_server.connections == 2
    retried = (ada, cy, eve)
    ids = {a: deliveries(db_env, a)["lesson-1"]["message_id"] for a in people}
    for address in retried:
        assert deliveries(db_env, address)["lesson-1"]["status"] == "deferred", address
        assert smtp_server.to(address) == [], address
    assert message_ids(smtp_server, eve, seen=True) == [ids[eve]]

    assert core(send(db_env, MONDAY + timedelta(minutes=2))) == counts()  # backoff
    assert core(send(db_env, RETRY)) == counts(sent=3)
    assert core(send(db_env, RETRY + timedelta(hours=2))) == counts()
    smtp_server.script.rcpt.clear()  # di's address would now be taken: it must not be tried
    for weeks in (1, 2):
        send(db_env, MONDAY + weeks * WEEK)

    assert smtp_server.to(di) == []
    assert listed(db_env)[di]["status"] == "bounced"
    for address in people:
        if address == di:
            continue
        assert smtp_server.lessons(address) == ["lesson-1", "lesson-2", "lesson-3"], address
        lesson_1 = [m for m in smtp_server.to(address) if m.message["X-Rekindle-Key"] == "lesson-1"]
        assert [str(m.message["Message-ID"]) for m in lesson_1] == [ids[address]], address
    assert len({ids[a] for a in people}) == len(people)
    by_status = status(db_env, MONDAY + 2 * WEEK)["deliveries"]["lesson-1"]
    assert {k: v for k, v in by_status.items() if v} == {"sent": 6, "failed": 1}


# --- rate limit ----------------------------------------------------------------------------


def import_readers(env: dict[str, str], tmp_path: Path, n: int) -> list[str]:
    """`subscribers import` of n readers; their addresses in order."""
    addresses = [f"reader{i:02d}@example.org" for i in range(n)]
    csv = tmp_path / "readers.csv"
    csv.write_text("email\n" + "".join(f"{a}\n" for a in addresses))
    result = run(env, "subscribers", "import", str(csv))
    assert result.exit_code == 0, result.output
    return addresses


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every time.sleep the main thread (the in-process `send`) makes, in seconds."""
    slept: list[float] = []
    real: Callable[[float], None] = time.sleep

    def spy(seconds: float) -> None:
        if threading.current_thread() is threading.main_thread():
            slept.append(seconds)
        real(seconds)

    monkeypatch.setattr(time, "sleep", spy)
    return slept


def test_rate_limit_spaces_a_whole_run(mail_env, smtp_server, tmp_path, sleeps):
    """rate_limit 20/s with 30 messages: the server receives them over at least ~1.4 s."""
    addresses = import_readers(mail_env, tmp_path, 30)
    report = send({**mail_env, "REKINDLE_RATE_LIMIT": "20"}, MONDAY)
    assert core(report) == counts(sent=30)
    assert sorted(a for m in smtp_server.messages for a in m.rcpt_tos) == addresses
    times = sorted(m.at for m in smtp_server.messages)
    assert times[-1] - times[0] >= 1.4  # 29 gaps of 1/20 s
    assert sleeps, "the run never waited"


def test_no_rate_limit_means_the_run_never_sleeps(mail_env, smtp_server, tmp_path, sleeps):
    """Without rate_limit a run of 30 messages does not sleep at all between them."""
    import_readers(mail_env, tmp_path, 30)
    assert core(send(mail_env, MONDAY)) == counts(sent=30)
    assert len(smtp_server.messages) == 30
    assert sleeps == []
