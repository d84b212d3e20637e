"""Only real bounces count: VERP envelope senders, and reports that must prove they are ours.

A bounce report changes a subscriber only when it came back to the VERP
address of a message we sent them, or quotes our signed Message-ID for them.
The genuine reports here are built from what the test SMTP server actually
received, in the shapes Postfix, Exim and Gmail send; the forged ones are what
a stranger could write.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clirun import add, listed, run, script
from mailer.tokens import Tokens
from mailserver import MailServer, Received

DATA = Path(__file__).parent / "data" / "inbound"
ADDED = "2026-03-02T07:00:00+00:00"  # a Monday, before the 09:00-20:00 window
SENT = "2026-03-02T09:30:00+00:00"  # lesson 1 goes out
RETURNED = "2026-03-02T09:40:00+00:00"  # the report arrives
NEXT_WEEK = "2026-03-09T09:30:00+00:00"
BYSTANDER = "zoe@example.org"
VERP = re.compile(r"^hello\+([a-z2-7]{20,})@example\.org$")
QUOTED_ID = re.compile(rb"<\d\.lesson-1@example\.org>")

TEMPLATES = {
    "postfix": ("postfix-dsn.eml", "alice.gone@example.net"),
    "exim": ("exim-bounce.eml", "bob.old@example.com"),
    "gmail": ("gmail-dsn.eml", "carol.moved@gmail.com"),
}


def eml(name: str) -> bytes:
    return (DATA / name).read_bytes()


def statuses(env: dict[str, str]) -> dict[str, str]:
    return {email: row["status"] for email, row in listed(env).items()}


def report(template: bytes, sent: Received, *, to_verp: bool, quote_id: bool) -> bytes:
    """`template` (a real MTA's report) returning `sent`: addressed to its VERP envelope
    sender when `to_verp`, quoting its Message-ID when `quote_id` (else a made-up one)."""
    raw = template
    if to_verp:
        raw = raw.replace(b"To: hello@example.org", b"To: " + sent.mail_from.encode(), 1)
    if quote_id:
        raw = QUOTED_ID.sub(str(sent.message["Message-ID"]).encode(), raw)
    return raw


def forged_report(addresses: list[str], *, quoted_ids: list[str] = ()) -> bytes:
    """A well-formed DSN from a stranger listing `addresses` as permanently failed."""
    blocks = "".join(
        f"Final-Recipient: rfc822; {a}\nAction: failed\nStatus: 5.1.1\n\n" for a in addresses
    )
    quoted = "".join(
        f"--b\nContent-Type: text/rfc822-headers\n\nFrom: Rekindle <hello@example.org>\n"
        f"To: {addresses[i % len(addresses)]}\nMessage-ID: {mid}\n\n"
        for i, mid in enumerate(quoted_ids)
    )
    return (
        "From: MAILER-DAEMON@mx.attacker.example (Mail Delivery System)\n"
        "To: hello@example.org\nSubject: Undelivered Mail Returned to Sender\n"
        "Auto-Submitted: auto-replied\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nThese addresses do not exist.\n\n"
        f"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.attacker.example\n\n"
        f"{blocks}{quoted}--b--\n"
    ).encode()


@pytest.fixture
def mail_env(env: dict[str, str], smtp_server: MailServer, database_url: str) -> dict[str, str]:
    """CLI environment sending to the test SMTP server, on SQLite and on PostgreSQL."""
    return {**env, "REKINDLE_SMTP_URL": smtp_server.url, "REKINDLE_DATABASE_URL": database_url}


def send_lesson_1(env: dict[str, str], smtp_server: MailServer, *addresses: str) -> None:
    for address in addresses:
        add(env, address, now=ADDED)
    done = run(env, "send", "--now", SENT, "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["sent"] == len(addresses)
    assert len(smtp_server.messages) == len(addresses)


def inbound(env: dict[str, str], raw: bytes, *args: str) -> str:
    """`inbound` in-process at RETURNED; exit 0 expected; the log it wrote."""
    result = run({**env, "REKINDLE_NOW": RETURNED}, "inbound", *args, input=raw)
    assert result.exit_code == 0, result.output
    return result.output


# --- what we send ----------------------------------------------------------------------------


def test_every_message_has_its_own_verp_envelope_sender_and_the_usual_from(mail_env, smtp_server):
    """MAIL FROM is hello+<token>@example.org, one token per (subscriber, key); From unchanged."""
    send_lesson_1(mail_env, smtp_server, "a@example.net", "b@example.net")
    senders = [m.mail_from for m in smtp_server.messages]
    assert all(VERP.match(s) for s in senders), senders
    assert len(set(senders)) == 2
    assert {str(m.message["From"]) for m in smtp_server.messages} == {
        "Rekindle <hello@example.org>"
    }
    assert {str(m.message["Return-Path"] or "") for m in smtp_server.messages} == {""}


def test_bounce_address_sets_the_envelope_sender_base(mail_env, smtp_server):
    """bounce_address = bounces@mail.example.org: MAIL FROM bounces+<token>@mail.example.org."""
    env = {**mail_env, "REKINDLE_BOUNCE_ADDRESS": "Bounces <bounces@mail.example.org>"}
    send_lesson_1(env, smtp_server, "a@example.net")
    (sent,) = smtp_server.messages
    assert re.fullmatch(r"bounces\+[a-z2-7]{20,}@mail\.example\.org", sent.mail_from)
    assert str(sent.message["From"]) == "Rekindle <hello@example.org>"


def test_a_confirmation_leaves_with_a_verp_envelope_sender_too(mail_env, smtp_server):
    """Notices (here a double opt-in confirmation) are VERP-addressed like lessons."""
    done = run(mail_env, "subscribers", "add", "new@example.net", "--double-opt-in")
    assert done.exit_code == 0, done.output
    (sent,) = smtp_server.to("new@example.net")
    assert VERP.match(sent.mail_from), sent.mail_from


def test_the_outbox_records_the_verp_envelope_sender_as_return_path(env, tmp_path):
    """Maildir outbox: each message's Return-Path is its VERP envelope sender."""
    add(env, "a@example.net", now=ADDED)
    assert run(env, "send", "--now", SENT).exit_code == 0
    (path,) = (tmp_path / "outbox" / "new").iterdir()
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert re.fullmatch(r"Return-Path: <hello\+[a-z2-7]{20,}@example\.org>", first), first


# --- genuine reports -------------------------------------------------------------------------

GENUINE = [
    pytest.param("postfix", True, False, id="postfix-to-verp"),
    pytest.param("postfix", False, True, id="postfix-quoting-message-id"),
    pytest.param("exim", True, False, id="exim-text-to-verp"),
    pytest.param("gmail", True, False, id="gmail-to-verp"),
    pytest.param("gmail", False, True, id="gmail-quoting-message-id"),
]


@pytest.mark.parametrize(("shape", "to_verp", "quote_id"), GENUINE)
def test_a_genuine_report_bounces_exactly_that_subscriber(
    mail_env, smtp_server, shape, to_verp, quote_id
):
    """A real report of a message we sent bounces its subscriber only; `send` skips them."""
    name, address = TEMPLATES[shape]
    send_lesson_1(mail_env, smtp_server, address, BYSTANDER, "hello@example.org")
    sent = smtp_server.to(address)[0]
    raw = report(eml(name), sent, to_verp=to_verp, quote_id=quote_id)
    args = ("--recipient", sent.mail_from) if to_verp else ()
    log = inbound(mail_env, raw, *args)
    assert re.search(rf"bounce: {re.escape(address)} .*proved by .*changed", log), log
    assert statuses(mail_env) == {
        address: "bounced",
        BYSTANDER: "active",
        "hello@example.org": "active",
    }
    done = run(mail_env, "send", "--now", NEXT_WEEK, "--json")
    assert done.exit_code == 0, done.output
    assert smtp_server.keys(address) == ["lesson-1"]
    assert smtp_server.lessons(BYSTANDER) == ["lesson-1", "lesson-2"]


def test_a_genuine_report_through_the_installed_script_exits_0(mail_env, smtp_server):
    """Postfix's pipe (`--recipient ${original_recipient}`) with a real DSN: exit 0, bounced."""
    name, address = TEMPLATES["postfix"]
    send_lesson_1(mail_env, smtp_server, address)
    sent = smtp_server.to(address)[0]
    raw = report(eml(name), sent, to_verp=True, quote_id=False)
    done = script(
        {**mail_env, "REKINDLE_NOW": RETURNED}, "inbound", "--recipient", sent.mail_from, input=raw
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert statuses(mail_env) == {address: "bounced"}


def test_a_genuine_verp_report_naming_a_thousand_others_changes_only_its_subscriber(
    mail_env, smtp_server
):
    """A real VERP bounce for one subscriber that also lists others changes that one alone."""
    send_lesson_1(mail_env, smtp_server, "a@example.net", BYSTANDER)
    sent = smtp_server.to("a@example.net")[0]
    raw = forged_report([BYSTANDER] + [f"x{i}@example.net" for i in range(999)])
    inbound(mail_env, raw, "--recipient", sent.mail_from)
    assert statuses(mail_env) == {"a@example.net": "bounced", BYSTANDER: "active"}


def test_a_genuine_report_twice_changes_nothing_the_second_time(mail_env, smtp_server):
    """The same report delivered again (an MTA retry): exit 0, nothing more changes."""
    name, address = TEMPLATES["postfix"]
    send_lesson_1(mail_env, smtp_server, address)
    sent = smtp_server.to(address)[0]
    raw = report(eml(name), sent, to_verp=True, quote_id=True)
    inbound(mail_env, raw, "--recipient", sent.mail_from)
    again = inbound(mail_env, raw, "--recipient", sent.mail_from)
    assert "nothing to change" in again
    assert statuses(mail_env) == {address: "bounced"}


def test_a_delay_notice_to_a_genuine_verp_address_is_only_logged(mail_env, smtp_server):
    """A 4.x.x delay report, even provably ours, changes nobody."""
    address = "ella.slow@example.net"
    send_lesson_1(mail_env, smtp_server, address)
    sent = smtp_server.to(address)[0]
    raw = report(eml("postfix-delay.eml"), sent, to_verp=True, quote_id=True)
    log = inbound(mail_env, raw, "--recipient", sent.mail_from)
    assert "temporary" in log
    assert statuses(mail_env) == {address: "active"}


def test_an_out_of_office_reply_to_a_verp_address_changes_nobody(mail_env, smtp_server):
    """Auto-replies sent to the envelope sender (RFC 3834) are not bounces."""
    address = "dan.reader@example.com"
    send_lesson_1(mail_env, smtp_server, address)
    sent = smtp_server.to(address)[0]
    raw = eml("out-of-office.eml").replace(
        b"To: Rekindle <hello@example.org>", b"To: " + sent.mail_from.encode()
    )
    inbound(mail_env, raw, "--recipient", sent.mail_from)
    assert statuses(mail_env) == {address: "active"}


@pytest.mark.parametrize("delivered", ["recipient", "delivered-to"])
def test_an_erased_subscribers_late_bounce_changes_nobody_who_got_their_id(
    mail_env, smtp_server, database_url, delivered
):
    """The subscriber with the highest id is erased; on SQLite a newcomer gets that id and the
    same lesson. The erased one's genuine DSN, to their VERP address (`--recipient`, or the
    Delivered-To an `--imap` mailbox has) and quoting their Message-ID, proves nothing about
    the newcomer: both tokens bind the address they were sent to."""
    name, address = TEMPLATES["postfix"]
    newcomer = "new.reader@example.net"
    send_lesson_1(mail_env, smtp_server, BYSTANDER, address)
    theirs = smtp_server.to(address)[0]
    gone = run(mail_env, "subscribers", "remove", address)
    assert gone.exit_code == 0, gone.output
    add(mail_env, newcomer, now=RETURNED)
    done = run(mail_env, "send", "--now", "2026-03-03T09:30:00+00:00", "--json")
    assert done.exit_code == 0, done.output
    (new,) = smtp_server.to(newcomer)
    parse = Tokens("any secret parses").read_verp
    claims = [parse(VERP.match(m.mail_from).group(1)) for m in (theirs, new)]
    assert claims[0] is not None and claims[1] is not None
    assert claims[0].key == claims[1].key == "lesson-1"
    if database_url.startswith("sqlite"):
        assert claims[0].subscriber_id == claims[1].subscriber_id, "SQLite gave the id again"
    assert new.message["Message-ID"] != theirs.message["Message-ID"]
    raw = report(eml(name), theirs, to_verp=True, quote_id=True)
    args: tuple[str, ...] = ()
    if delivered == "recipient":
        args = ("--recipient", theirs.mail_from)
    else:
        raw = f"Delivered-To: {theirs.mail_from}\n".encode() + raw
    result = run({**mail_env, "REKINDLE_NOW": NEXT_WEEK}, "inbound", *args, input=raw)
    assert result.exit_code == 0, result.output
    assert "proves no message of ours" in result.output, result.output
    assert statuses(mail_env) == {BYSTANDER: "active", newcomer: "active"}


# --- forged reports --------------------------------------------------------------------------


def test_a_forged_report_listing_a_thousand_subscribers_changes_nobody(env, database_url, tmp_path):
    """A stranger's DSN naming 1,000 subscribers, with made-up tokens and ids: nobody changes."""
    db_env = {**env, "REKINDLE_DATABASE_URL": database_url, "REKINDLE_NOW": ADDED}
    addresses = [f"reader{i}@example.net" for i in range(1000)]
    (tmp_path / "list.csv").write_text("email\n" + "\n".join(addresses) + "\n")
    assert run(db_env, "subscribers", "import", str(tmp_path / "list.csv")).exit_code == 0
    fake_ids = [f"<lesson-1.{'0' * 24}@example.org>", "<1.lesson-1@example.org>"]
    raw = forged_report(addresses, quoted_ids=fake_ids)
    fake_verp = "hello+" + "a" * 32 + "@example.org"
    done = script(
        {**db_env, "REKINDLE_NOW": RETURNED}, "inbound", "--recipient", fake_verp, input=raw
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "proves no message of ours" in lines[0]
    assert "and 995 more" in lines[0]
    assert set(statuses(db_env).values()) == {"active"}


def test_a_report_quoting_a_tampered_message_id_changes_nobody(mail_env, smtp_server):
    """Our real Message-ID with one digit of its signature changed proves nothing."""
    name, address = TEMPLATES["postfix"]
    send_lesson_1(mail_env, smtp_server, address)
    sent = smtp_server.to(address)[0]
    real = str(sent.message["Message-ID"])
    digest = re.search(r"\.([0-9a-f]{24})@", real).group(1)
    flipped = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    raw = QUOTED_ID.sub(real.replace(digest, flipped).encode(), eml(name))
    log = inbound(mail_env, raw)
    assert "proves no message of ours" in log
    assert statuses(mail_env) == {address: "active"}


def test_a_subscribers_own_message_id_cannot_bounce_someone_else(mail_env, smtp_server):
    """Mallory quotes her own lesson's real Message-ID in a DSN naming Alice: nobody changes."""
    name, alice = TEMPLATES["postfix"]
    send_lesson_1(mail_env, smtp_server, alice, "mallory@example.com")
    mallorys = str(smtp_server.to("mallory@example.com")[0].message["Message-ID"])
    raw = QUOTED_ID.sub(mallorys.encode(), eml(name))
    inbound(mail_env, raw)
    assert statuses(mail_env) == {alice: "active", "mallory@example.com": "active"}


def _flip_last(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:-1]}{'b' if local[-1] != 'b' else 'c'}@{domain}"


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(_flip_last, id="signature-changed"),
        pytest.param(lambda v: v.replace("@example.org", "@elsewhere.example"), id="other-domain"),
        pytest.param(lambda v: v.replace("hello+", "other+"), id="other-local-part"),
        pytest.param(lambda v: v.split("@")[0][:-5] + "@example.org", id="truncated"),
    ],
)
def test_a_tampered_verp_recipient_changes_nobody(mail_env, smtp_server, mangle):
    """A VERP address altered in any way proves nothing; the real one, upper-cased, still does."""
    name, address = TEMPLATES["postfix"]
    send_lesson_1(mail_env, smtp_server, address)
    sent = smtp_server.to(address)[0]
    inbound(mail_env, eml(name), "--recipient", mangle(sent.mail_from))
    assert statuses(mail_env) == {address: "active"}
    inbound(mail_env, eml(name), "--recipient", sent.mail_from.upper())
    assert statuses(mail_env) == {address: "bounced"}


# --- the token itself ------------------------------------------------------------------------

KEYS = st.sampled_from(["lesson-1", "lesson-6", "reminder-3", "confirm", "welcome"]) | st.builds(
    "broadcast-{}".format, st.integers(1, 10**9)
)


def _verified(tokens: Tokens, token: str, email: str) -> tuple[int, str] | None:
    claim = tokens.read_verp(token)
    if claim is None or not tokens.is_verp_of(claim, email):
        return None
    return claim.subscriber_id, claim.key


@given(subscriber=st.integers(1, 2**32 - 1), key=KEYS, position=st.integers(0, 200))
def test_a_verp_token_names_its_message_and_any_changed_character_breaks_it(
    subscriber, key, position
):
    """A VERP token verifies as (subscriber, key) for its address, case-insensitively;
    one changed character, another secret or another address: it proves nothing."""
    tokens = Tokens("a secret key for tests")
    email = "Reader@Example.net"
    token = tokens.verp(subscriber, key, email)
    assert len(token) <= 56 and token.isalnum() and token == token.lower()
    assert _verified(tokens, token, email) == (subscriber, key)
    assert _verified(tokens, token.upper(), email) == (subscriber, key)
    assert _verified(tokens, token, "reader@example.net") == (subscriber, key)
    at = position % len(token)
    changed = token[:at] + ("b" if token[at] != "b" else "c") + token[at + 1 :]
    assert _verified(tokens, changed, email) is None
    assert _verified(Tokens("another secret"), token, email) is None
    assert _verified(tokens, token, "newcomer@example.net") is None
