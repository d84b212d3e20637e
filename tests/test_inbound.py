"""`rekindle-mail inbound`: list commands by email and bounce reports, from stdin or IMAP.

The messages under tests/data/inbound/ are shaped like what real MTAs and mail
clients send: a Postfix DSN and delay notice, an Exim text bounce, a Gmail DSN,
an out-of-office reply, and subscribe/unsubscribe commands in their usual forms.
"""

from __future__ import annotations

import base64
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


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


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
    """The single line the command printed on stderr (docs/commands.md: one line, no traceback)."""
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


@pytest.mark.parametrize(
    "display", ["Nora\u202eniuQ", "Nora\u0085Quinn", "Nora\u200bQuinn", "Nora\u2028Quinn"]
)
def test_subscribe_from_a_sender_with_a_hostile_display_name_signs_up_without_the_name(
    mail_env, smtp_server, display
):
    """A From name with control or formatting characters: pending, no name stored, confirmed
    by a confirmation that greets "Hi there" and never carries that text."""
    raw = eml("subscribe.eml").replace(
        b"From: Nora Quinn <", f"From: =?utf-8?b?{b64(display)}?= <".encode()
    )
    done = piped(mail_env, raw)
    assert done.returncode == 0, done.stderr
    row = listed(mail_env)[NORA]
    assert (row["status"], row["name"]) == ("pending", None)
    (confirm,) = smtp_server.to(NORA)
    assert "Nora" not in confirm.data.decode("utf-8", "replace")


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
    shown = run(mail_env, "subscribers", "show", DAN, "--json")
    (entry,) = json.loads(shown.stdout)["history"]
    assert (entry["by"], entry["via"], entry["change"]) == ("reader", "email", "unsubscribe")
    assert entry["detail"] == "left (was active)"


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


# --- bounce reports (tests/test_bounces.py has the rest) --------------------------------------


@pytest.mark.parametrize("name", ["postfix-dsn.eml", "exim-bounce.eml", "gmail-dsn.eml"])
def test_a_bounce_report_that_proves_nothing_changes_nobody(mail_env, name):
    """A real MTA's report shape, but not returned to a VERP address nor quoting our
    signed Message-ID: exit 0, one log line, the addresses it names stay active."""
    for address in ("alice.gone@example.net", "bob.old@example.com", "carol.moved@gmail.com"):
        add(mail_env, address, now=ADDED)
    done = piped(mail_env, eml(name))
    assert done.returncode == 0, done.stderr
    assert_no_traceback(done)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "proves no message of ours" in done.stderr
    assert set(statuses(mail_env).values()) == {"active"}


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
    assert run(imap_env, "send", "--now", IN_WINDOW).exit_code == 0
    lessons = len(smtp_server.messages)
    # Postfix's local delivery writes the envelope recipient (the VERP address) as Delivered-To.
    verp = smtp_server.to("alice.gone@example.net")[0].mail_from
    genuine = eml("postfix-dsn.eml").replace(
        b"Delivered-To: hello@example.org", f"Delivered-To: {verp}".encode()
    )
    for raw in (
        eml("subscribe.eml"),
        eml("unsubscribe-reply.eml"),
        genuine,
        eml("postfix-delay.eml"),
        eml("out-of-office.eml"),
        eml("chit-chat.eml"),
    ):
        imap_server.add(raw)
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
    assert len(smtp_server.messages) == lessons + 1
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


# --- messages that cannot be handled never stall the mail after them ------------------------


def nested(depth: int) -> bytes:
    """A message `depth` multiparts deep, with an unsubscribe command at the bottom."""
    head = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n' for i in range(depth)
    )
    tail = "".join(f"--b{i}--\n" for i in reversed(range(depth)))
    return (
        f"From: Dan Reader <{DAN}>\nTo: hello@example.org\nSubject: unsubscribe\n"
        f"MIME-Version: 1.0\n{head}Content-Type: text/plain\n\nunsubscribe\n{tail}"
    ).encode()


HOSTILE = [
    pytest.param(nested(1000), id="1000-multiparts-deep"),
    pytest.param(nested(150), id="150-multiparts-deep"),
    pytest.param(
        b"From: Dan <dan.reader@example.com>\nSubject: unsubscribe\n\n" + b"x" * (10 * 2**20),
        id="over-10-MB",
    ),
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_a_message_that_cannot_be_handled_is_skipped_with_a_warning(mail_env, raw):
    """stdin: exit 0 (the MTA must not retry it for days), one warning line, nothing changed."""
    add(mail_env, DAN, now=ADDED)
    done = piped(mail_env, raw)
    assert done.returncode == 0, done.stderr
    assert_no_traceback(done)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "skipped a message that cannot be handled" in lines[0]
    assert statuses(mail_env) == {DAN: "active"}


def test_a_message_a_few_multiparts_deep_is_still_read(mail_env):
    """Ordinary nesting (a reply inside a forward inside a report) is handled as usual."""
    add(mail_env, DAN, now=ADDED)
    done = piped(mail_env, nested(8))
    assert done.returncode == 0, done.stderr
    assert statuses(mail_env) == {DAN: "unsubscribed"}


def test_imap_a_message_that_cannot_be_handled_is_marked_seen_and_the_rest_read(
    imap_env, imap_server
):
    """IMAP without imap_quarantine: the bad message is flagged seen, later ones are handled,
    and the next poll does not trip over it again."""
    add(imap_env, DAN, now=ADDED)
    bad = imap_server.add(nested(1000))
    imap_server.add(eml("unsubscribe-reply.eml"))
    done = script(imap_env, "inbound", "--imap", imap_server.url())
    assert done.returncode == 0, done.stderr
    assert_no_traceback(done)
    assert "handled 1 message(s), skipped 1" in done.stdout
    assert "skipped a message that cannot be handled" in done.stderr
    assert imap_server.unseen() == []
    assert bad in [m.uid for m in imap_server.messages]
    assert statuses(imap_env)[DAN] == "unsubscribed"
    again = script(imap_env, "inbound", "--imap", imap_server.url())
    assert again.returncode == 0, again.stderr
    assert "handled 0 message(s)" in again.stdout


@pytest.mark.parametrize("move", [True, False], ids=["move", "copy"])
def test_imap_quarantine_takes_a_bad_message_out_of_the_inbox(imap_env, move):
    """imap_quarantine = "Quarantine": the bad message is moved there (created if missing);
    a server without MOVE gets COPY and the original flagged \\Deleted and \\Seen."""
    server = ImapServer(move=move).start()
    try:
        env = {
            **imap_env,
            "REKINDLE_IMAP_PASSWORD": server.password,
            "REKINDLE_IMAP_QUARANTINE": "Quarantine",
        }
        add(env, DAN, now=ADDED)
        bad = server.add(nested(1000))
        server.add(eml("unsubscribe-reply.eml"))
        done = script(env, "inbound", "--imap", server.url())
        assert done.returncode == 0, done.stderr
        assert server.folders["Quarantine"] == [re.sub(rb"\r?\n", b"\r\n", nested(1000))]
        left = {m.uid: m.flags for m in server.messages}
        if move:
            assert bad not in left
        else:
            assert {"\\Deleted", "\\Seen"} <= left[bad]
        assert server.unseen() == []
        assert statuses(env)[DAN] == "unsubscribed"
    finally:
        server.stop()


def test_a_password_in_the_imap_url_never_appears_in_an_error_line(imap_env):
    """`--imap imap://list:PASSWORD@host…` that fails: the line (and --debug's traceback)
    show *** instead of the password."""
    url = f"imap://list:Hunter2-secret@127.0.0.1:{free_port()}/INBOX"
    env = {k: v for k, v in imap_env.items() if k != "REKINDLE_IMAP_PASSWORD"}
    done = script(env, "inbound", "--imap", url)
    line = one_error_line(done)
    assert done.returncode == 75, done.stderr
    assert "Hunter2-secret" not in done.stderr + done.stdout
    debug = script(env, "--debug", "inbound", "--imap", url.replace("INBOX", "Hunter2-secret"))
    assert debug.returncode == 75
    assert "Hunter2-secret" not in debug.stderr + debug.stdout
    assert "127.0.0.1" in line
