"""`rekindle-mail inbound`: list commands by email and bounce reports, from stdin or IMAP.

The messages under tests/data/inbound/ are shaped like what real MTAs and mail
clients send: a Postfix DSN and delay notice, an Exim text bounce, a Gmail DSN,
an out-of-office reply, and subscribe/unsubscribe commands in their usual forms.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from click.testing import Result
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clirun import add, listed, run, script
from imapserver import ImapServer
from mailserver import MailServer, free_port

DATA = Path(__file__).parent / "data" / "inbound"
ADDED = "2026-03-02T07:00:00+00:00"  # a Monday, before the 09:00-20:00 window
LATER = "2026-03-02T08:00:00+00:00"  # when the inbound message arrives
IN_WINDOW = "2026-03-02T09:30:00+00:00"
UNSUBSCRIBE_ADDRESS = "unsubscribe@example.org"
DAN = "dan.reader@example.com"  # the sender of the command and chat messages
NORA = "nora.quinn@example.net"  # the sender of subscribe.eml
OWN = "hello@example.org"  # REKINDLE_FROM; the operator is on the course too
BYSTANDER = "zoe@example.org"


def eml(name: str) -> bytes:
    return (DATA / name).read_bytes()


def without_header(raw: bytes, name: bytes) -> bytes:
    """`raw` with every `name:` header line removed (continuation lines too)."""
    head, sep, body = raw.partition(b"\n\n")
    kept = re.sub(rb"(?im)^" + re.escape(name) + rb":.*\n(?:[ \t].*\n)*", b"", head + b"\n")
    return kept.rstrip(b"\n") + sep + body


def statuses(env: dict[str, str]) -> dict[str, str]:
    return {email: row["status"] for email, row in listed(env).items()}


def inbound(env: dict[str, str], raw: bytes, *args: str, now: str = LATER) -> Result:
    """`inbound` in-process with `raw` on stdin."""
    return run({**env, "REKINDLE_NOW": now}, "inbound", *args, input=raw)


def piped(env: dict[str, str], raw: bytes, *args: str, now: str = LATER) -> CompletedProcess[str]:
    """The installed `rekindle-mail inbound` with `raw` piped on stdin, as Postfix's pipe does."""
    return script({**env, "REKINDLE_NOW": now}, "inbound", *args, input=raw)


def assert_no_traceback(done: CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr + done.stdout, done.stderr


def one_error_line(done: CompletedProcess[str]) -> str:
    """The single line the command printed on stderr (SPEC §8: one clear line, no traceback)."""
    assert_no_traceback(done)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def mail_env(env: dict[str, str], smtp_server: MailServer) -> dict[str, str]:
    """CLI environment sending to the test SMTP server, with an unsubscribe address configured."""
    return {
        **env,
        "REKINDLE_SMTP_URL": smtp_server.url,
        "REKINDLE_UNSUBSCRIBE_ADDRESS": UNSUBSCRIBE_ADDRESS,
    }


@pytest.fixture
def imap_server() -> Iterator[ImapServer]:
    """A real IMAP server on loopback with an empty INBOX."""
    server = ImapServer().start()
    yield server
    server.stop()


# --- subscribe -------------------------------------------------------------------------------


def test_subscribe_by_email_stores_the_sender_pending_and_sends_one_confirmation(
    mail_env, smtp_server
):
    """`inbound < subscribe.eml`: exit 0, sender pending with their display name, one confirm."""
    done = piped(mail_env, eml("subscribe.eml"))
    assert done.returncode == 0, done.stderr
    assert_no_traceback(done)
    row = listed(mail_env)[NORA]
    assert (row["status"], row["name"], row["source"]) == ("pending", "Nora Quinn", "email")
    assert smtp_server.keys(NORA) == ["confirm"]
    confirm = smtp_server.to(NORA)[0].message
    assert str(confirm["To"]) == NORA  # no unconfirmed name in a confirmation
    text = confirm.get_body(preferencelist=("plain",)).get_content()
    assert "https://rekindle.example.org/confirm/" in text and "Hi there," in text


def test_a_second_subscribe_within_a_day_sends_no_second_confirmation(mail_env, smtp_server):
    """The same subscribe message again within 24 h: exit 0, still pending, no second email."""
    assert inbound(mail_env, eml("subscribe.eml"), now=LATER).exit_code == 0
    again = inbound(mail_env, eml("subscribe.eml"), now="2026-03-03T07:59:00+00:00")
    assert again.exit_code == 0, again.output
    assert statuses(mail_env)[NORA] == "pending"
    assert smtp_server.keys(NORA) == ["confirm"]
    # A day later the person may ask for a fresh confirmation.
    assert inbound(mail_env, eml("subscribe.eml"), now="2026-03-03T08:01:00+00:00").exit_code == 0
    assert smtp_server.keys(NORA) == ["confirm", "confirm"]


def test_subscribe_from_an_active_subscriber_changes_nothing_and_sends_nothing(
    mail_env, smtp_server
):
    """Someone already on the course who writes `subscribe` stays active and gets no mail."""
    add(mail_env, NORA, "--name", "Nora", now=ADDED)
    result = inbound(mail_env, eml("subscribe.eml"))
    assert result.exit_code == 0, result.output
    row = listed(mail_env)[NORA]
    assert (row["status"], row["name"]) == ("active", "Nora")
    assert smtp_server.messages == []


# --- unsubscribe -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["unsubscribe-reply.eml", "unsubscribe-body.eml", "to-unsubscribe-address.eml"],
    ids=["re-unsubscribe-subject", "empty-subject-first-line", "to-unsubscribe-address"],
)
def test_unsubscribe_commands_unsubscribe_an_active_subscriber(mail_env, smtp_server, name):
    """Each unsubscribe form: exit 0, the sender is unsubscribed, others untouched, no mail."""
    add(mail_env, DAN, now=ADDED)
    add(mail_env, BYSTANDER, now=ADDED)
    result = inbound(mail_env, eml(name))
    assert result.exit_code == 0, result.output
    assert statuses(mail_env) == {DAN: "unsubscribed", BYSTANDER: "active"}
    assert smtp_server.messages == []


def test_unsubscribe_by_subprocess_exits_0_and_logs_what_it_did(mail_env):
    """The installed script, fed `Re: unsubscribe`, exits 0 and says on stderr whom it changed."""
    add(mail_env, DAN, now=ADDED)
    done = piped(mail_env, eml("unsubscribe-reply.eml"))
    assert done.returncode == 0, done.stderr
    assert_no_traceback(done)
    assert re.search(rf"unsubscribe: {re.escape(DAN)} .*changed {re.escape(DAN)}", done.stderr)
    assert statuses(mail_env)[DAN] == "unsubscribed"


def test_the_envelope_recipient_can_be_the_unsubscribe_address(mail_env):
    """`--recipient <unsubscribe address>` (Postfix ${recipient}) unsubscribes whatever the text."""
    add(mail_env, DAN, now=ADDED)
    chat = eml("chit-chat.eml")
    assert inbound(mail_env, chat, "--recipient", "list@example.org").exit_code == 0
    assert statuses(mail_env)[DAN] == "active"
    result = inbound(mail_env, chat, "--recipient", UNSUBSCRIBE_ADDRESS)
    assert result.exit_code == 0, result.output
    assert statuses(mail_env)[DAN] == "unsubscribed"


@pytest.mark.parametrize(
    "name", ["unsubscribe-reply.eml", "unsubscribe-body.eml", "to-unsubscribe-address.eml"]
)
def test_unsubscribe_from_an_unknown_sender_changes_nothing(mail_env, name):
    """An unsubscribe command from someone not on the list: exit 0, nobody added or changed."""
    add(mail_env, BYSTANDER, now=ADDED)
    result = inbound(mail_env, eml(name))
    assert result.exit_code == 0, result.output
    assert statuses(mail_env) == {BYSTANDER: "active"}


# --- bounce reports --------------------------------------------------------------------------

DSNS = [
    pytest.param(eml("postfix-dsn.eml"), "alice.gone@example.net", id="postfix"),
    pytest.param(eml("exim-bounce.eml"), "bob.old@example.com", id="exim"),
    # The same Exim bounce after a forwarder dropped X-Failed-Recipients: only the text is left.
    pytest.param(
        without_header(eml("exim-bounce.eml"), b"X-Failed-Recipients"),
        "bob.old@example.com",
        id="exim-text-only",
    ),
    pytest.param(eml("gmail-dsn.eml"), "carol.moved@gmail.com", id="gmail"),
    pytest.param(
        without_header(eml("gmail-dsn.eml"), b"X-Failed-Recipients"),
        "carol.moved@gmail.com",
        id="gmail-dsn-part-only",
    ),
]


@pytest.mark.parametrize(("raw", "address"), DSNS)
def test_a_bounce_report_marks_the_failed_recipient_bounced_and_send_skips_them(
    mail_env, smtp_server, raw, address
):
    """A DSN for an active subscriber: exit 0, they are bounced, and `send` never mails them."""
    add(mail_env, address, now=ADDED)
    add(mail_env, BYSTANDER, now=ADDED)
    add(mail_env, OWN, now=ADDED)  # the list's own address is quoted in every bounce
    result = inbound(mail_env, raw)
    assert result.exit_code == 0, result.output
    assert statuses(mail_env) == {address: "bounced", BYSTANDER: "active", OWN: "active"}
    sent = run(mail_env, "send", "--now", IN_WINDOW, "--json")
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.stdout)["sent"] == 2
    assert smtp_server.keys(BYSTANDER) == ["lesson-1"]
    assert smtp_server.to(address) == []
    again = run(mail_env, "send", "--now", "2026-03-09T09:30:00+00:00", "--json")
    assert again.exit_code == 0, again.output
    assert smtp_server.to(address) == []
    assert smtp_server.lessons(BYSTANDER) == ["lesson-1", "lesson-2"]


def test_a_bounce_report_does_not_change_someone_who_left(mail_env):
    """A late DSN for an unsubscribed person keeps them `unsubscribed` (they left; it is final)."""
    add(mail_env, "alice.gone@example.net", now=ADDED)
    assert run(mail_env, "subscribers", "unsubscribe", "alice.gone@example.net").exit_code == 0
    result = inbound(mail_env, eml("postfix-dsn.eml"))
    assert result.exit_code == 0, result.output
    assert statuses(mail_env) == {"alice.gone@example.net": "unsubscribed"}


def test_a_bounce_report_by_subprocess_exits_0_and_logs_the_bounced_address(mail_env):
    """The installed script, fed a Postfix DSN, exits 0 and logs the address it bounced."""
    add(mail_env, "alice.gone@example.net", now=ADDED)
    done = piped(mail_env, eml("postfix-dsn.eml"))
    assert done.returncode == 0, done.stderr
    assert_no_traceback(done)
    assert re.search(r"bounce: alice\.gone@example\.net .*changed", done.stderr), done.stderr
    assert statuses(mail_env) == {"alice.gone@example.net": "bounced"}


# --- ignored messages ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["postfix-delay.eml", "out-of-office.eml", "chit-chat.eml", "own-from.eml"],
    ids=["postfix-delay-notice", "out-of-office", "chit-chat", "from-the-list-itself"],
)
def test_ignored_messages_change_nothing_and_say_so(mail_env, smtp_server, name):
    """Delay notices, auto-replies, chat and our own mail: exit 0, no change, 'ignore' logged."""
    for address in (DAN, "ella.slow@example.net", OWN):
        add(mail_env, address, now=ADDED)
    done = piped(mail_env, eml(name))
    assert done.returncode == 0, done.stderr
    assert_no_traceback(done)
    assert re.search(r"(?m)^rekindle-mail inbound: ignore\b.*nothing to change", done.stderr), (
        done.stderr
    )
    assert set(statuses(mail_env).values()) == {"active"}
    assert smtp_server.messages == []  # an auto-reply never gets an answer


def test_the_out_of_office_reply_reads_as_a_command_without_its_auto_submitted_header(mail_env):
    """The auto-reply is ignored only because of Auto-Submitted: stripped, it unsubscribes Dan."""
    add(mail_env, DAN, now=ADDED)
    assert inbound(mail_env, eml("out-of-office.eml")).exit_code == 0
    assert statuses(mail_env)[DAN] == "active"
    stripped = without_header(eml("out-of-office.eml"), b"Auto-Submitted")
    assert inbound(mail_env, stripped).exit_code == 0
    assert statuses(mail_env)[DAN] == "unsubscribed"


def test_a_subscribe_from_the_lists_own_address_is_ignored(mail_env, smtp_server):
    """A `subscribe` that claims to come from the list's From address never starts a sign-up."""
    raw = eml("subscribe.eml").replace(
        b"From: Nora Quinn <nora.quinn@example.net>", b"From: " + OWN.encode()
    )
    result = inbound(mail_env, raw)
    assert result.exit_code == 0, result.output
    assert statuses(mail_env) == {}
    assert smtp_server.messages == []


# --- bad input -------------------------------------------------------------------------------

BAD_INPUT = [
    pytest.param(b"", id="empty-stdin"),
    pytest.param(random.Random(20260302).randbytes(4096), id="random-bytes"),
    pytest.param(
        eml("postfix-dsn.eml")[: eml("postfix-dsn.eml").index(b"Action: failed") + 3],
        id="truncated-mime",
    ),
    pytest.param(
        b"From: =?x-no-such-charset?q?Someone?= <someone@example.com>\n"
        b"To: hello@example.org\n"
        b"Subject: =?x-no-such-charset?B?dW5zdWJzY3JpYmU=?=\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b"\n\n'
        b'--b\nContent-Type: text/plain; charset="x-no-such-charset"\n\nunsubscribe\n'
        b'--b\nContent-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: base64\n\n'
        b"!!not base64\xff\xfe\n--b--\n",
        id="invalid-charsets",
    ),
    pytest.param(
        b"From: Dan Reader <dan.reader@example.com>\n"
        b"Subject: unsub\x00scribe\n"
        b"X-Note: a\x00b\n\n"
        b"hello\x00 there\n",
        id="nul-in-header",
    ),
    # Malformed address headers that make the stdlib's header parser raise.
    pytest.param(
        b"From: Nora <nora.quinn@example.net>\nTo: Rekindle <\rhello@example.org>\n"
        b"Subject: hello\n\nhi\n",
        id="cr-inside-to-address",
    ),
    pytest.param(
        b"From: MAILER-DAEMON@\rmail.example.org\nSubject: hello\n\nhi\n",
        id="cr-inside-from-address",
    ),
    pytest.param(
        b"From: Undisclosed: text/plain; charset=us-ascii\nSubject: subscribe\n\nhi\n",
        id="group-syntax-from",
    ),
    # Bounce-shaped but without a From header: a flufl.bounce detector trips over it.
    pytest.param(
        b"Return-Path: <>\nSubject: Undelivered Mail Returned to Sender\n\nsorry\n",
        id="bounce-without-from",
    ),
]


@pytest.mark.parametrize("raw", BAD_INPUT)
def test_bad_input_exits_0_without_a_traceback(mail_env, smtp_server, raw):
    """Empty, random, truncated or malformed input: exit 0, no traceback, nothing changed."""
    add(mail_env, DAN, now=ADDED)
    done = piped(mail_env, raw)
    assert done.returncode == 0, done.stderr
    assert_no_traceback(done)
    assert "Error" not in done.stderr
    assert statuses(mail_env) == {DAN: "active"}
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            b"From: Dan <dan@exa\x00mple.com>\nSubject: unsubscribe\n\nunsubscribe\n",
            id="unsubscribe-from-a-nul-address",
        ),
        pytest.param(
            eml("postfix-dsn.eml").replace(
                b"Final-Recipient: rfc822; alice.gone@example.net",
                b"Final-Recipient: rfc822; alice.gone@exa\x00mple.net",
            ),
            id="dsn-naming-a-nul-address",
        ),
    ],
)
def test_a_nul_inside_an_address_is_ignored_on_every_database(env, database_url, raw):
    """An address with a NUL byte is nobody: exit 0 (not 75: it must not be retried for days)."""
    db_env = {**env, "REKINDLE_DATABASE_URL": database_url}
    add(db_env, DAN, now=ADDED)
    result = inbound(db_env, raw)
    assert result.exit_code == 0, result.output
    assert statuses(db_env) == {DAN: "active"}


def _mutated(raw: bytes, dropped: list[int], edits: list[tuple[int, int, bytes]]) -> bytes:
    """`raw` with some header lines dropped and some bytes spliced in or cut out."""
    head, sep, body = raw.partition(b"\n\n")
    lines = head.split(b"\n")
    for index in dropped:
        if lines:
            del lines[index % len(lines)]
    data = bytearray(b"\n".join(lines) + sep + body)
    for position, cut, insert in edits:
        at = position % (len(data) + 1)
        data[at : at + cut] = insert
    return bytes(data)


_SAMPLES = sorted(p.name for p in DATA.glob("*.eml"))
_NASTY = st.sampled_from([b"\x00", b"\r", b"\n ", b"<", b">", b'"', b":", b";", b"=?", b"?="])
messages = st.binary(max_size=2000) | st.builds(
    _mutated,
    st.sampled_from(_SAMPLES).map(eml),
    st.lists(st.integers(0, 100), max_size=4),
    st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 8), _NASTY | st.binary(max_size=4)),
        max_size=4,
    ),
)


@pytest.fixture
def feed(env: dict[str, str]) -> Callable[[bytes], Result]:
    """`inbound` in-process on one SQLite file, as a callable (short in hypothesis reports)."""
    return lambda raw: inbound(env, raw)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=messages)
@example(raw=b"")
@example(raw=b"\x00" * 64)
@example(raw=b"Content-Type: multipart/report; boundary=x\n\n--x\n")
@example(raw=b"Return-Path: <>\nSubject: Undelivered Mail Returned to Sender\n\nsorry\n")
def test_any_bytes_on_stdin_exit_0(feed, raw):
    """Whatever bytes arrive on stdin, `inbound` handles or ignores them and exits 0."""
    result = feed(raw)
    assert result.exit_code == 0, (result.output, result.exception)


# --- the database cannot be reached ----------------------------------------------------------


def test_an_uncreatable_sqlite_directory_exits_75(env, tmp_path):
    """SQLite under a path that cannot be created: exit 75 so the MTA retries, one line."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the data directory should be\n")
    broken = {**env, "REKINDLE_DATABASE_URL": f"sqlite:///{blocker / 'data' / 'rekindle.db'}"}
    done = piped(broken, eml("subscribe.eml"))
    line = one_error_line(done)
    assert done.returncode == 75, done.stderr
    assert "not-a-directory" in line


def test_postgresql_on_a_closed_port_exits_75(env):
    """PostgreSQL that refuses connections: exit 75 so the MTA retries, one line, no traceback."""
    broken = {**env, "REKINDLE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"}
    done = piped(broken, eml("subscribe.eml"))
    line = one_error_line(done)
    assert done.returncode == 75, done.stderr
    assert "refused" in line.lower()


# --- IMAP ------------------------------------------------------------------------------------


@pytest.fixture
def imap_env(mail_env: dict[str, str], imap_server: ImapServer) -> dict[str, str]:
    """`mail_env` with the IMAP password of the test server."""
    return {**mail_env, "REKINDLE_IMAP_PASSWORD": imap_server.password, "REKINDLE_NOW": LATER}


def test_imap_poll_handles_every_unseen_message_once(imap_env, imap_server, smtp_server):
    """`--imap`: exit 0, every unseen message applied and flagged seen; a second run: nothing."""
    for address in (DAN, "alice.gone@example.net", "ella.slow@example.net", "bob.old@example.com"):
        add(imap_env, address, now=ADDED)
    for name in (
        "subscribe.eml",
        "unsubscribe-reply.eml",
        "postfix-dsn.eml",
        "postfix-delay.eml",
        "out-of-office.eml",
        "chit-chat.eml",
    ):
        imap_server.add(eml(name))
    # Already read by a person: not the program's business, even though it is a bounce.
    old = imap_server.add(eml("exim-bounce.eml"), seen=True)

    done = script(imap_env, "inbound", "--imap", imap_server.url())
    assert done.returncode == 0, done.stderr
    assert_no_traceback(done)
    assert "handled 6 message(s)" in done.stdout
    assert imap_server.unseen() == []
    assert statuses(imap_env) == {
        NORA: "pending",
        DAN: "unsubscribed",
        "alice.gone@example.net": "bounced",
        "ella.slow@example.net": "active",
        "bob.old@example.com": "active",
    }
    assert smtp_server.keys(NORA) == ["confirm"]
    fetches = [c for c in imap_server.commands if c.startswith("UID FETCH")]
    assert len(fetches) == 6
    assert all("BODY.PEEK[]" in c for c in fetches)  # flagged only once handled
    assert not any(c.startswith(f"UID FETCH {old} ") for c in fetches)

    again = run(imap_env, "inbound", "--imap", imap_server.url())
    assert again.exit_code == 0, again.output
    assert "handled 0 message(s)" in again.stdout
    assert statuses(imap_env)[DAN] == "unsubscribed"
    assert len(smtp_server.messages) == 1
    assert imap_server.logins == 2


def test_imap_a_malformed_message_does_not_block_the_mailbox(imap_env, imap_server):
    """A message that cannot be parsed is skipped and flagged; the ones after it are handled."""
    add(imap_env, DAN, now=ADDED)
    imap_server.add(b"From: Nora <nora@example.net>\nTo: Rekindle <\rhello@example.org>\n\nhi\n")
    imap_server.add(eml("unsubscribe-reply.eml"))
    done = script(imap_env, "inbound", "--imap", imap_server.url())
    assert done.returncode == 0, done.stderr
    assert_no_traceback(done)
    assert imap_server.unseen() == []
    assert statuses(imap_env)[DAN] == "unsubscribed"


def test_imap_wrong_password_exits_75_with_one_line(imap_env, imap_server):
    """A refused IMAP login: exit 75, one line on stderr, and no message is touched."""
    add(imap_env, DAN, now=ADDED)
    uid = imap_server.add(eml("unsubscribe-reply.eml"))
    done = script(
        {**imap_env, "REKINDLE_IMAP_PASSWORD": "wrong"}, "inbound", "--imap", imap_server.url()
    )
    line = one_error_line(done)
    assert done.returncode == 75, done.stderr
    assert "127.0.0.1" in line
    assert imap_server.unseen() == [uid]
    assert imap_server.logins == 0
    assert statuses(imap_env)[DAN] == "active"


def test_imap_database_unreachable_leaves_every_message_unseen(imap_env, imap_server):
    """With the database down, the poll fails in one line and flags nothing, so nothing is lost."""
    uids = [imap_server.add(eml("subscribe.eml")), imap_server.add(eml("postfix-dsn.eml"))]
    broken = {
        **imap_env,
        "REKINDLE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x",
    }
    done = script(broken, "inbound", "--imap", imap_server.url())
    one_error_line(done)
    assert done.returncode != 0
    assert imap_server.unseen() == uids


def test_plain_imap_to_a_remote_host_is_refused_before_connecting(imap_env):
    """imap:// (no TLS) to a non-loopback host: exit 1, one line, the password is never sent."""
    done = script(imap_env, "inbound", "--imap", "imap://list@mail.example.org/INBOX")
    line = one_error_line(done)
    assert done.returncode == 1, done.stderr
    assert "mail.example.org" in line
    assert "imaps://" in line
