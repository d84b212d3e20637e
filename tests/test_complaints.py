"""Complaints: ARF feedback reports (RFC 5965) that prove the message was ours.

A reader who pressed "this is spam" becomes `complained` and gets no more mail
of any kind, but only when the report proves the message was ours for them:
our VERP envelope sender (Original-Mail-From, the quoted Return-Path, or the
address the report was delivered to) or our signed Message-ID in the quoted
original. The genuine reports here wrap what the test SMTP server actually
received in the shapes Yahoo (CFL) and Microsoft (JMRP) send; the forged ones
are what a stranger could write.
"""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clirun import add, listed, run, script, send, status
from mailer.inbound.classify import Action, classify, parse
from mailer.reports.complaints import ComplaintRate, complaint_rate
from mailer.runtime import Runtime
from mailer.tokens import Tokens
from mailer.web import courier_of, create_app
from mailserver import MailServer, Received
from webserve import poll, serving

DATA = Path(__file__).parent / "data" / "inbound"
ADDED = "2026-03-02T07:00:00+00:00"  # a Monday, before the 09:00-20:00 window
SENT = "2026-03-02T09:30:00+00:00"  # lesson 1 goes out
REPORTED = "2026-03-02T10:15:00+00:00"  # the feedback report arrives
NUDGE = "2026-03-05T09:30:00+00:00"  # lesson 1's mid-week reminder would be due
NEXT_WEEK = "2026-03-09T09:30:00+00:00"
WEEK_AFTER = "2026-03-16T09:30:00+00:00"
READER = "ann.reader@yahoo.com"
BYSTANDER = "zoe@example.org"
OTHER = "bob@example.net"
SECRET = "a secret key for the complaint tests"


def arf(
    shape: str,
    sent: Received,
    *,
    feedback_type: str | None = "abuse",
    mail_from: bool = True,
    return_path: bool = True,
    redact: bool = False,
    rcpt_to: str | None = None,
) -> bytes:
    """A `shape` ("yahoo" or "microsoft") feedback report about `sent`, the message as the
    test server received it: with or without Original-Mail-From and the quoted
    Return-Path (our VERP envelope sender), and with the reader's address blotted out
    everywhere when `redact`, as providers often do."""
    template = (DATA / ("yahoo-arf.eml" if shape == "yahoo" else "microsoft-jmrp.eml")).read_text()
    reader = sent.rcpt_tos[0]
    original = sent.data.decode().replace("\r\n", "\n").rstrip("\n")
    shown = "redacted" if redact else reader
    if redact:
        original = original.replace(reader, "redacted")
    lines = []
    for line in template.splitlines():
        if "@@FEEDBACK_TYPE@@" in line and feedback_type is None:
            continue
        if line.startswith("Original-Mail-From:") and not mail_from:
            continue
        if line.startswith("Return-Path: <@@") and not return_path:
            continue
        lines.append(line)
    text = "\n".join(lines) + "\n"
    text = text.replace("@@FEEDBACK_TYPE@@", feedback_type or "")
    text = text.replace("@@ORIGINAL_MAIL_FROM@@", sent.mail_from)
    text = text.replace("@@ORIGINAL_RCPT_TO@@", rcpt_to or shown)
    text = text.replace("@@SUBJECT@@", str(sent.message["Subject"]))
    return text.replace("@@ORIGINAL@@", original).encode()


@pytest.fixture
def mail_env(env: dict[str, str], smtp_server: MailServer, database_url: str) -> dict[str, str]:
    """CLI environment sending to the test SMTP server, on SQLite and on PostgreSQL."""
    return {
        **env,
        "REKINDLE_SMTP_URL": smtp_server.url,
        "REKINDLE_DATABASE_URL": database_url,
        "REKINDLE_SECRET_KEY": SECRET,
    }


def send_lesson_1(env: dict[str, str], smtp_server: MailServer, *addresses: str) -> None:
    for address in addresses:
        add(env, address, now=ADDED)
    assert send(env, SENT)["sent"] == len(addresses)


def lesson_1(smtp_server: MailServer, address: str = READER) -> Received:
    (sent,) = [m for m in smtp_server.to(address) if m.message["X-Rekindle-Key"] == "lesson-1"]
    return sent


def inbound(env: dict[str, str], raw: bytes, *args: str, now: str = REPORTED) -> str:
    """`inbound` in-process at `now`; exit 0 expected; the log it wrote."""
    result = run({**env, "REKINDLE_NOW": now}, "inbound", *args, input=raw)
    assert result.exit_code == 0, result.output
    return result.output


def statuses(env: dict[str, str]) -> dict[str, str]:
    return {email: row["status"] for email, row in listed(env).items()}


def history(env: dict[str, str], address: str) -> list[dict]:
    shown = run(env, "subscribers", "show", address, "--json")
    assert shown.exit_code == 0, shown.output
    return list(json.loads(shown.stdout)["history"])


# --- genuine reports -------------------------------------------------------------------------

GENUINE = [
    pytest.param("yahoo", {"redact": True}, "quoted VERP envelope sender", id="yahoo-redacted"),
    pytest.param(
        "yahoo",
        {"mail_from": False, "return_path": False},
        "signed Message-ID",
        id="yahoo-no-envelope-fields",
    ),
    pytest.param(
        "microsoft",
        {"redact": True, "mail_from": False},
        "signed Message-ID",
        id="microsoft-redacted-no-mail-from",
    ),
    pytest.param("microsoft", {}, "quoted VERP envelope sender", id="microsoft-to-kept"),
]


@pytest.mark.parametrize(("shape", "options", "evidence"), GENUINE)
def test_a_genuine_report_makes_exactly_that_reader_complained(
    mail_env, smtp_server, shape, options, evidence
):
    """Yahoo's and Microsoft's reports about a lesson we sent: that reader complained, the
    log names them and the evidence, their history keeps it; bystanders stay active."""
    send_lesson_1(mail_env, smtp_server, READER, BYSTANDER, OTHER)
    log = inbound(mail_env, arf(shape, lesson_1(smtp_server), **options))
    assert re.search(rf"complaint: {re.escape(READER)} .*{evidence}.*; changed {READER}", log), log
    assert len(log.strip().splitlines()) == 1, log
    assert statuses(mail_env) == {READER: "complained", BYSTANDER: "active", OTHER: "active"}
    row = listed(mail_env)[READER]
    assert row["next_due"] is None
    (entry,) = [e for e in history(mail_env, READER) if e["change"] == "complaint"]
    assert (entry["by"], entry["via"]) == ("reader", "feedback loop")
    assert "abuse report" in entry["detail"] and "was active" in entry["detail"]


def test_a_complained_reader_gets_no_more_mail_of_any_kind(mail_env, smtp_server, tmp_path):
    """After a complaint: no reminder, no lesson, no broadcast over the following weeks,
    while a bystander gets all of them; the queued reminder is cancelled in the ledger."""
    send_lesson_1(mail_env, smtp_server, READER, BYSTANDER)
    inbound(mail_env, arf("yahoo", lesson_1(smtp_server), redact=True))
    deliveries = run(mail_env, "deliveries", "list", "--json")
    reminders = {
        r["email"]: r["status"] for r in json.loads(deliveries.stdout) if r["key"] == "reminder-1"
    }
    assert reminders == {READER: "cancelled", BYSTANDER: "queued"}
    note = tmp_path / "note.md"
    note.write_text("Hello {{ first_name }}, a short note.\n", encoding="utf-8")
    created = run(mail_env, "broadcast", "create", "--subject", "A note", "--body", str(note))
    assert created.exit_code == 0, created.output
    queued = run({**mail_env, "REKINDLE_NOW": NUDGE}, "broadcast", "send", created.stdout.strip())
    assert queued.exit_code == 0, queued.output
    for when in (NUDGE, NEXT_WEEK, WEEK_AFTER):
        send(mail_env, when)
    assert smtp_server.keys(READER) == ["lesson-1"]
    assert sorted(smtp_server.keys(BYSTANDER)) == [
        "broadcast-1",
        "lesson-1",
        "lesson-2",
        "lesson-3",
        "reminder-1",
    ]


def test_a_genuine_report_through_the_installed_script_exits_0(mail_env, smtp_server):
    """The FBL address piped to the installed script: exit 0, one log line, complained."""
    send_lesson_1(mail_env, smtp_server, READER)
    raw = arf("microsoft", lesson_1(smtp_server), redact=True)
    done = script(
        {**mail_env, "REKINDLE_NOW": REPORTED},
        "inbound",
        "--recipient",
        "fbl@example.org",
        input=raw,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert statuses(mail_env) == {READER: "complained"}


def test_a_report_delivered_to_the_verp_address_proves_the_reader(mail_env, smtp_server):
    """Some feedback loops send the report to the envelope sender: that VERP address alone,
    with no quoted original at all, proves the reader."""
    send_lesson_1(mail_env, smtp_server, READER, BYSTANDER)
    sent = lesson_1(smtp_server)
    raw = arf("yahoo", sent, mail_from=False, return_path=False, redact=True)
    raw = raw.replace(str(sent.message["Message-ID"]).encode(), b"<gone@example.org>")
    log = inbound(mail_env, raw, "--recipient", sent.mail_from)
    assert "proved by VERP address" in log, log
    assert statuses(mail_env) == {READER: "complained", BYSTANDER: "active"}


@pytest.mark.parametrize(
    "reshape",
    [
        pytest.param(
            lambda raw: raw.replace(
                b"multipart/report; report-type=feedback-report", b"multipart/mixed"
            ),
            id="multipart-mixed",
        ),
        pytest.param(
            lambda raw: raw.replace(
                b"multipart/report; report-type=feedback-report",
                b'Multipart/Report; Report-Type="Feedback-Report"',
            ),
            id="odd-casing",
        ),
        pytest.param(
            lambda raw: raw.replace(b"; report-type=feedback-report", b""),
            id="no-report-type",
        ),
    ],
)
def test_odd_but_genuine_shapes_are_complaints_too(mail_env, smtp_server, reshape):
    """multipart/mixed with a feedback-report part, odd casing, no report-type: complaints."""
    send_lesson_1(mail_env, smtp_server, READER)
    inbound(mail_env, reshape(arf("yahoo", lesson_1(smtp_server), redact=True)))
    assert statuses(mail_env) == {READER: "complained"}


@pytest.mark.parametrize("feedback_type", ["abuse", "fraud", "virus", "other", None, "Abuse"])
def test_every_feedback_type_but_not_spam_is_a_complaint(env, smtp_server, feedback_type):
    """abuse, fraud, virus, other, or none given: the proved reader complained."""
    env = {**env, "REKINDLE_SMTP_URL": smtp_server.url, "REKINDLE_SECRET_KEY": SECRET}
    send_lesson_1(env, smtp_server, READER)
    inbound(env, arf("microsoft", lesson_1(smtp_server), feedback_type=feedback_type))
    assert statuses(env) == {READER: "complained"}


def test_not_spam_feedback_changes_nothing(mail_env, smtp_server):
    """Feedback-Type: not-spam (RFC 6430), even proved: logged, nobody changes."""
    send_lesson_1(mail_env, smtp_server, READER)
    log = inbound(mail_env, arf("yahoo", lesson_1(smtp_server), feedback_type="not-spam"))
    assert "not spam" in log and "nothing to change" in log, log
    assert statuses(mail_env) == {READER: "active"}


@pytest.mark.parametrize(
    "value",
    [
        "not-spam (reader said ok)",
        "NOT-SPAM; x",
        "(note) not-spam",
        "Not-Spam\t",
        "not-spam (a (b))",
    ],
)
def test_not_spam_with_comments_or_trailing_text_is_still_not_spam(value):
    """The field may carry comments and whitespace (CFWS, RFC 5965): the first token decides."""
    raw = arf("yahoo", FAKE).replace(b"Feedback-Type: abuse", b"Feedback-Type: " + value.encode())
    request = classify(parse(raw), unsubscribe_address=None)
    assert request.action == Action.IGNORE and "not spam" in request.reason, request.reason


@pytest.mark.parametrize("value", ["abuse (reader pressed spam)", "not spam", "(not-spam) abuse"])
def test_a_comment_does_not_turn_a_complaint_into_not_spam(value):
    """Only the token counts: a comment saying not-spam, or `not spam`, is a complaint."""
    raw = arf("yahoo", FAKE).replace(b"Feedback-Type: abuse", b"Feedback-Type: " + value.encode())
    assert classify(parse(raw), unsubscribe_address=None).action == Action.COMPLAINT


def test_not_spam_with_a_comment_through_inbound_changes_nothing(mail_env, smtp_server):
    """A proved report of `not-spam (reader said ok)` leaves the reader active."""
    send_lesson_1(mail_env, smtp_server, READER)
    sent = lesson_1(smtp_server)
    log = inbound(mail_env, arf("yahoo", sent, feedback_type="not-spam (reader said ok)"))
    assert "not spam" in log and "nothing to change" in log, log
    assert statuses(mail_env) == {READER: "active"}


def test_the_same_report_twice_is_harmless(mail_env, smtp_server):
    """A report delivered again: exit 0, nothing more changes, one history entry."""
    send_lesson_1(mail_env, smtp_server, READER)
    raw = arf("yahoo", lesson_1(smtp_server))
    inbound(mail_env, raw)
    again = inbound(mail_env, raw, now=NEXT_WEEK)
    assert "nothing to change" in again, again
    assert statuses(mail_env) == {READER: "complained"}
    assert [e["change"] for e in history(mail_env, READER)].count("complaint") == 1


def test_a_report_listing_many_readers_changes_only_the_one_it_proves(mail_env, smtp_server):
    """Original-Rcpt-To naming every subscriber, the original proving one: that one alone."""
    others = [f"reader{i}@example.net" for i in range(30)]
    send_lesson_1(mail_env, smtp_server, READER, *others)
    everyone = ", ".join([READER, *others])
    raw = arf("microsoft", lesson_1(smtp_server), rcpt_to=everyone)
    inbound(mail_env, raw)
    changed = {a: s for a, s in statuses(mail_env).items() if s != "active"}
    assert changed == {READER: "complained"}


def test_an_unsubscribed_reader_who_complains_is_recorded_as_complained(mail_env, smtp_server):
    """Leaving first does not hide a complaint: unsubscribed -> complained, in the history."""
    send_lesson_1(mail_env, smtp_server, READER)
    assert run(mail_env, "subscribers", "unsubscribe", READER).exit_code == 0
    inbound(mail_env, arf("yahoo", lesson_1(smtp_server)))
    assert statuses(mail_env) == {READER: "complained"}
    (entry,) = [e for e in history(mail_env, READER) if e["change"] == "complaint"]
    assert "was unsubscribed" in entry["detail"]


# --- forged reports --------------------------------------------------------------------------


def _flip(message_id: str) -> str:
    digest = re.search(r"\.([0-9a-f]{24})@", message_id).group(1)
    return message_id.replace(digest, digest[:-1] + ("0" if digest[-1] != "0" else "1"))


@pytest.mark.parametrize("redact", [True, False], ids=["redacted", "to-kept"])
def test_a_report_with_a_tampered_message_id_changes_nobody(mail_env, smtp_server, redact):
    """Our real Message-ID with one digit of its signature changed, no VERP: nobody."""
    send_lesson_1(mail_env, smtp_server, READER, BYSTANDER)
    sent = lesson_1(smtp_server)
    raw = arf("microsoft", sent, mail_from=False, redact=redact)
    real = str(sent.message["Message-ID"])
    log = inbound(mail_env, raw.replace(real.encode(), _flip(real).encode()))
    assert "proves no message of ours" in log, log
    assert statuses(mail_env) == {READER: "active", BYSTANDER: "active"}


def test_a_report_made_with_another_installations_key_changes_nobody(mail_env, smtp_server):
    """VERP and Message-ID signed by another secret key (same subscriber id): nobody."""
    send_lesson_1(mail_env, smtp_server, READER)
    sent = lesson_1(smtp_server)
    theirs = Tokens("another installation's secret")
    verp = f"hello+{theirs.verp(1, 'lesson-1', READER)}@example.org"
    mid = theirs.message_id(1, "lesson-1", "example.org", READER)
    raw = arf("yahoo", sent).replace(sent.mail_from.encode(), verp.encode())
    raw = raw.replace(str(sent.message["Message-ID"]).encode(), mid.encode())
    log = inbound(mail_env, raw)
    assert "proves no message of ours" in log, log
    assert statuses(mail_env) == {READER: "active"}


def _verp_id(sent: Received) -> int:
    """The subscriber id the VERP envelope sender of `sent` names (parsed, not verified)."""
    claim = Tokens("any secret parses").read_verp(sent.mail_from.split("+")[1].split("@")[0])
    assert claim is not None, sent.mail_from
    return claim.subscriber_id


ERASED_READERS_REPORTS = [
    pytest.param({"redact": True}, (), id="original-mail-from-verp"),
    pytest.param(
        {"mail_from": False, "return_path": False, "redact": True}, (), id="message-id-only"
    ),
    pytest.param(
        {"mail_from": False, "return_path": False, "redact": True},
        ("--recipient",),
        id="delivered-to-verp",
    ),
]


@pytest.mark.parametrize(("options", "args"), ERASED_READERS_REPORTS)
def test_an_erased_readers_late_complaint_changes_nobody_who_got_their_id(
    mail_env, smtp_server, database_url, options, args
):
    """The reader with the highest id is erased; on SQLite a newcomer gets that id and the
    same lesson. A genuine report about the erased reader's lesson (by their VERP envelope
    sender, or by their Message-ID alone, found in the ledger) proves nothing about anyone:
    both tokens bind the address they were sent to."""
    send_lesson_1(mail_env, smtp_server, BYSTANDER, READER)
    theirs = lesson_1(smtp_server, READER)
    gone = run(mail_env, "subscribers", "remove", READER)
    assert gone.exit_code == 0, gone.output
    add(mail_env, OTHER, now=REPORTED)
    assert send(mail_env, "2026-03-03T09:30:00+00:00")["sent"] == 1
    newcomers = lesson_1(smtp_server, OTHER)
    if database_url.startswith("sqlite"):
        assert _verp_id(newcomers) == _verp_id(theirs), "SQLite gave the erased id again"
    assert newcomers.message["Message-ID"] != theirs.message["Message-ID"]
    raw = arf("yahoo", theirs, **options)
    if args:
        raw = raw.replace(str(theirs.message["Message-ID"]).encode(), b"<gone@example.org>")
        args = (*args, theirs.mail_from)
    log = inbound(mail_env, raw, *args, now=NEXT_WEEK)
    assert "proves no message of ours" in log, log
    assert statuses(mail_env) == {BYSTANDER: "active", OTHER: "active"}
    assert "complaint" not in [e["change"] for e in history(mail_env, OTHER)]


def test_a_report_without_the_original_changes_nobody(mail_env, smtp_server):
    """A feedback report naming the reader but quoting nothing of ours: nobody changes."""
    send_lesson_1(mail_env, smtp_server, READER)
    raw = arf("yahoo", lesson_1(smtp_server), mail_from=False)
    head, _, _ = raw.partition(b"Content-Type: message/rfc822")
    raw = head.rsplit(b"------=_Part", 1)[0] + b"------=_Part_7261_1044231951.1772446360419--\n"
    log = inbound(mail_env, raw)
    assert "proves no message of ours" in log, log
    assert statuses(mail_env) == {READER: "active"}


def test_the_providers_own_from_is_never_the_subscriber(mail_env, smtp_server):
    """Even when the provider's From is a subscriber, a report proving nobody changes nobody."""
    send_lesson_1(mail_env, smtp_server, "staff@hotmail.com")
    sent = lesson_1(smtp_server, "staff@hotmail.com")
    raw = arf("microsoft", sent, mail_from=False, redact=True)
    raw = raw.replace(str(sent.message["Message-ID"]).encode(), b"<x@example.org>")
    inbound(mail_env, raw)
    assert statuses(mail_env) == {"staff@hotmail.com": "active"}


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda raw: raw[: len(raw) // 2], id="truncated-mime"),
        pytest.param(
            lambda raw: raw.replace(
                b"Feedback-Type: abuse", b"Feedback-Type: ab\x01u\x7fse\x1b[2J"
            ),
            id="control-characters-in-feedback-type",
        ),
        pytest.param(
            lambda raw: raw.replace(
                b"Content-Type: message/rfc822",
                b"Content-Type: message/rfc822\n" + b"X: " + b"a" * 11_000_000,
            ),
            id="over-10-mb",
        ),
        pytest.param(lambda raw: raw.replace(b"\n\n", b"\n", 3), id="headers-run-into-parts"),
    ],
)
def test_malformed_reports_exit_0_with_one_log_line(env, mangle):
    """Truncated, control characters, 10 MB, broken structure: exit 0, one line, no traceback."""
    sent = FAKE
    add(env, READER, now=ADDED)
    done = script({**env, "REKINDLE_NOW": REPORTED}, "inbound", input=mangle(arf("yahoo", sent)))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "\x1b" not in done.stderr and "\x01" not in done.stderr
    assert statuses(env) == {READER: "active"}


FAKE = Received(
    "hello+aaaaqlmmvzxg33ofuzwwqmbmkb5yjut@example.org",
    [READER],
    b"From: Rekindle <hello@example.org>\r\nTo: " + READER.encode() + b"\r\n"
    b"Subject: Heal yourself first\r\nMessage-ID: <lesson-1.0123456789abcdef01234567@"
    b"example.org>\r\nX-Rekindle-Key: lesson-1\r\n\r\nHello\r\n",
)


@given(value=st.text(max_size=80))
def test_any_feedback_type_reads_as_one_printable_line(value):
    """Whatever a Feedback-Type holds, the report is a complaint or a not-spam note, and its
    reason is one line of printable text."""
    raw = arf("yahoo", FAKE).replace(b"Feedback-Type: abuse", b"Feedback-Type: " + value.encode())
    request = classify(parse(raw), unsubscribe_address=None)
    assert request.action in (Action.COMPLAINT, Action.IGNORE)
    assert request.reason.isprintable(), request.reason
    assert request.action == Action.COMPLAINT or "not spam" in request.reason


# --- what a complaint stays through ----------------------------------------------------------


def test_a_bounce_after_a_complaint_keeps_complained(mail_env, smtp_server):
    """A genuine 5.x.x bounce for a complained reader leaves them complained."""
    send_lesson_1(mail_env, smtp_server, READER)
    sent = lesson_1(smtp_server)
    inbound(mail_env, arf("yahoo", sent))
    dsn = (
        (DATA / "postfix-dsn.eml").read_bytes().replace(b"alice.gone@example.net", READER.encode())
    )
    log = inbound(mail_env, dsn, "--recipient", sent.mail_from, now=NEXT_WEEK)
    assert "bounce:" in log and "nothing to change" in log, log
    assert statuses(mail_env) == {READER: "complained"}


def test_export_then_import_keeps_complained(mail_env, smtp_server, tmp_path, sqlite_url):
    """A backup carries `complained`, and a restore keeps it: nobody is mailed again."""
    send_lesson_1(mail_env, smtp_server, READER, BYSTANDER)
    inbound(mail_env, arf("yahoo", lesson_1(smtp_server)))
    backup = tmp_path / "backup.csv"
    assert run(mail_env, "subscribers", "export", str(backup)).exit_code == 0
    (row,) = [line for line in backup.read_text().splitlines() if line.startswith(READER)]
    assert ",complained," in row
    fresh = {**mail_env, "REKINDLE_DATABASE_URL": f"sqlite:///{tmp_path / 'restored.db'}"}
    restored = run({**fresh, "REKINDLE_NOW": REPORTED}, "subscribers", "import", str(backup))
    assert restored.exit_code == 0, restored.output
    assert "1 complained" in restored.output
    assert statuses(fresh) == {READER: "complained", BYSTANDER: "active"}
    again = run({**fresh, "REKINDLE_NOW": REPORTED}, "subscribers", "import", str(backup))
    assert "skipped 2 already subscribed" in again.output
    smtp_server.messages.clear()
    send(fresh, NEXT_WEEK)
    assert smtp_server.keys(READER) == []
    # A restored complaint is old news: the 30-day complaint rate does not count it.
    assert status(fresh, NEXT_WEEK)["complaints"]["complaints"] == 0


def test_the_operator_cannot_mail_or_reactivate_a_complained_reader(mail_env, smtp_server):
    """resume, restart, jump, test-send, invite, unsubscribe and a retry: refused or nothing;
    the reader stays complained and gets nothing."""
    send_lesson_1(mail_env, smtp_server, READER)
    inbound(mail_env, arf("yahoo", lesson_1(smtp_server)))
    smtp_server.messages.clear()
    for args in (
        ("subscribers", "resume", READER),
        ("subscribers", "restart", READER),
        ("subscribers", "jump", READER, "2"),
        ("subscribers", "add", READER, "--double-opt-in"),
        ("subscribers", "unsubscribe", READER),
        ("test-send", READER, "1"),
    ):
        done = run({**mail_env, "REKINDLE_NOW": NEXT_WEEK}, *args)
        assert done.exit_code == 1, (args, done.output)
        assert "Traceback" not in done.output
    assert run(mail_env, "send", "--now", NEXT_WEEK, "--retry-failed").exit_code == 0
    assert statuses(mail_env) == {READER: "complained"}
    assert smtp_server.messages == []


def test_an_unsubscribe_email_keeps_the_complaint_on_record(mail_env, smtp_server):
    """`unsubscribe` by email from a complained reader changes nothing."""
    send_lesson_1(mail_env, smtp_server, READER)
    inbound(mail_env, arf("yahoo", lesson_1(smtp_server)))
    raw = (DATA / "unsubscribe-body.eml").read_bytes()
    sender = re.search(rb"^From: .*<([^>]+)>", raw, re.MULTILINE).group(1)
    inbound(mail_env, raw.replace(sender, READER.encode()))
    assert statuses(mail_env) == {READER: "complained"}


def test_a_subscribe_email_for_a_complained_reader_sends_nothing_and_changes_nothing(
    mail_env, smtp_server
):
    """Anyone can send `subscribe` with the reader's address as From: they stay complained,
    get no confirmation, their history is untouched, and the log line says why."""
    send_lesson_1(mail_env, smtp_server, READER)
    inbound(mail_env, arf("yahoo", lesson_1(smtp_server)))
    before = history(mail_env, READER)
    smtp_server.messages.clear()
    raw = (DATA / "subscribe.eml").read_bytes()
    for sender in (READER, READER.upper()):
        log = inbound(mail_env, raw.replace(b"nora.quinn@example.net", sender.encode()), now=NUDGE)
        assert len(log.strip().splitlines()) == 1, log
        assert "nothing sent" in log and "marked our mail as spam" in log, log
    assert send(mail_env, NEXT_WEEK)["sent"] == 0
    assert statuses(mail_env) == {READER: "complained"}
    assert history(mail_env, READER) == before
    assert smtp_server.messages == []


def test_the_sign_up_form_for_a_complained_reader_answers_as_for_anyone_and_sends_nothing(
    mail_env, smtp_server, tmp_path
):
    """Against `serve`: the form answers exactly as for a new address, the reader stays
    complained and gets nothing, and the operator's log says why in one line."""
    send_lesson_1(mail_env, smtp_server, READER)
    inbound(mail_env, arf("yahoo", lesson_1(smtp_server)))
    smtp_server.messages.clear()
    log = tmp_path / "serve.log"
    origin = {"Origin": "https://rekindle.example.org"}
    with serving({**mail_env, "REKINDLE_NOW": NUDGE}, log) as web:
        answers = [
            web.post(
                "/subscribe", {"email": who, "name": "", "timezone": "UTC", "website": ""}, **origin
            )
            for who in (READER, OTHER)
        ]
        poll(lambda: smtp_server.to(OTHER), "the stranger's confirmation")
        poll(lambda: "marked our mail as spam" in log.read_text(), "the operator's log line")
    assert answers[0].status == answers[1].status == 200
    assert answers[0].body == answers[1].body
    assert statuses(mail_env) == {READER: "complained", OTHER: "pending"}
    assert [m.rcpt_tos for m in smtp_server.messages] == [[OTHER]]
    refused = [line for line in log.read_text().splitlines() if READER in line]
    assert len(refused) == 1 and "nothing sent" in refused[0], log.read_text()
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("double_opt_in", [False, True], ids=["active", "double-opt-in"])
def test_subscribers_add_refuses_a_complained_reader_naming_the_way_back(
    mail_env, smtp_server, double_opt_in
):
    """`subscribers add` (either form) exits 1 with one line: they marked our mail as spam,
    and only after they write and the operator removes them can they sign up afresh."""
    send_lesson_1(mail_env, smtp_server, READER)
    inbound(mail_env, arf("yahoo", lesson_1(smtp_server)))
    smtp_server.messages.clear()
    extra = ["--double-opt-in"] if double_opt_in else []
    done = script({**mail_env, "REKINDLE_NOW": NUDGE}, "subscribers", "add", READER, *extra)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "marked our mail as spam" in lines[0] and "writing to you" in lines[0]
    assert f"subscribers remove {READER}" in lines[0]
    assert statuses(mail_env) == {READER: "complained"}
    assert smtp_server.messages == []
    # The way back the message names: removed, they can be invited afresh.
    assert run(mail_env, "subscribers", "remove", READER).exit_code == 0
    again = run({**mail_env, "REKINDLE_NOW": NUDGE}, "subscribers", "add", READER, *extra)
    assert again.exit_code == 0, again.output
    assert statuses(mail_env) == {READER: "pending" if double_opt_in else "active"}


def test_the_unsubscribe_link_and_the_course_page_keep_the_complaint(mail_env, smtp_server):
    """One-click unsubscribe and "Leave the course" from a complained reader change nothing,
    and erasing themselves sends them no goodbye."""
    send_lesson_1(mail_env, smtp_server, READER)
    sent = lesson_1(smtp_server)
    inbound(mail_env, arf("yahoo", sent))
    smtp_server.messages.clear()
    links = re.findall(r"<(https://[^>]+)>", str(sent.message["List-Unsubscribe"]))
    unsubscribe = links[0].removeprefix("https://rekindle.example.org")
    runtime = Runtime(config_path=None, env={**mail_env, "REKINDLE_NOW": NEXT_WEEK})
    app = create_app(runtime)
    try:
        client = app.test_client()
        form = {"List-Unsubscribe": "One-Click"}
        assert client.post(unsubscribe, data=form).status_code == 200
        assert statuses(mail_env) == {READER: "complained"}
        tokens = Tokens(SECRET)
        course = f"/course/{tokens.course(1, READER)}"
        shown = client.get(course)
        assert b"You have left the course" in shown.data and b'id="leave"' not in shown.data
        assert client.post(f"{course}/leave").status_code == 409
        assert statuses(mail_env) == {READER: "complained"}
        confirm = tokens.erase(1, READER)
        erased = client.post(f"{course}/erase/confirm", data={"confirm": confirm})
        assert erased.status_code == 200, erased.data
    finally:
        courier_of(app).close()
        runtime.close()
    assert statuses(mail_env) == {}
    assert smtp_server.messages == []


# --- status and the complaint rate -----------------------------------------------------------


def test_status_counts_complaints_and_the_rate_of_the_last_30_days(mail_env, smtp_server):
    """1 complaint among 4 readers mailed: 25.00 %; 31 days on, it has left the window."""
    send_lesson_1(mail_env, smtp_server, READER, BYSTANDER, OTHER, "dan@example.com")
    inbound(mail_env, arf("microsoft", lesson_1(smtp_server)))
    summary = status(mail_env, NEXT_WEEK)
    assert summary["subscribers"]["complained"] == 1
    assert summary["complaints"] == {
        "days": 30,
        "complaints": 1,
        "mailed": 4,
        "rate": 0.25,
        "gmail_limit": 0.003,
    }
    text = run(mail_env, "status", "--now", NEXT_WEEK)
    assert text.exit_code == 0, text.output
    assert "complained 1" in text.output
    line = "Complaints: 1 (25.00 % of 4 readers mailed in the last 30 days; Gmail's limit is 0.3 %)"
    assert line in text.output.splitlines(), text.output
    later = status(mail_env, "2026-04-03T09:30:00+00:00")  # 32 days after both
    assert later["complaints"]["complaints"] == 0
    assert later["subscribers"]["complained"] == 1


def test_complaint_rate_is_one_function_with_a_frozen_result(mail_env, smtp_server):
    """complaint_rate(session, now) -> ComplaintRate(complaints, mailed), `rate` 0.0 when
    nobody was mailed; the figures status shows come from it."""
    assert ComplaintRate(0, 0).rate == 0.0
    assert ComplaintRate(3, 2500).rate == pytest.approx(0.0012)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ComplaintRate(1, 2).complaints = 5  # type: ignore[misc]
    send_lesson_1(mail_env, smtp_server, READER, BYSTANDER)
    inbound(mail_env, arf("yahoo", lesson_1(smtp_server)))
    runtime = Runtime(config_path=None, env=mail_env)
    try:
        with runtime.session() as session:
            found = complaint_rate(session, datetime.fromisoformat(NEXT_WEEK))
            before = complaint_rate(session, datetime.fromisoformat(ADDED))
    finally:
        runtime.close()
    assert (found.complaints, found.mailed, found.rate) == (1, 2, 0.5)
    assert (before.complaints, before.mailed, before.rate) == (0, 0, 0.0)
