"""Transports: SMTP over verified TLS with AUTH, refusals that keep mail due, the Maildir outbox."""

from __future__ import annotations

import email
import email.policy
import json
import mailbox
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trustme
from aiosmtpd.smtp import AuthResult, LoginPassword

from clirun import run, script
from mailserver import LESSON_HEADERS, MailServer

ADDED = "2026-03-01T12:00:00+00:00"  # a Sunday noon: before the first window
SEND = "2026-03-02T10:00:00+00:00"  # Monday 10:00 UTC: inside the 09:00-20:00 window
LATER = "2026-03-02T11:00:00+00:00"
USER, PASSWORD = "mailer", "s3cret pass/word"
ADA = "ada@example.org"


class CountingAuth:
    """An aiosmtpd authenticator for USER/PASSWORD that remembers every attempt.

    A refusal is answered with 535 (handled=False): mailserver.password_checker's
    AuthResult(success=False) makes aiosmtpd send no reply at all, and the client waits.
    """

    def __init__(self) -> None:
        self.attempts: list[tuple[str, str]] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            self.attempts.append(("?", "?"))
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        self.attempts.append((login, password))
        if (login, password) == (USER, PASSWORD):
            return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)


@dataclass
class TlsServer:
    """A running TLS mail server with AUTH, and the URL that reaches it."""

    scheme: str
    server: MailServer
    auth: CountingAuth

    def url(self, user: str = USER, password: str | None = PASSWORD) -> str:
        secret = f":{quote(password, safe='')}" if password is not None else ""
        return f"{self.scheme}://{user}{secret}@127.0.0.1:{self.server.port}"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """A private certificate authority, unknown to the system trust store."""
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def start_tls_server(scheme: str, ca: trustme.CA, host: str = "127.0.0.1") -> TlsServer:
    """smtps: implicit TLS; smtp+starttls: STARTTLS required before anything else."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(host).configure_cert(context)
    auth = CountingAuth()
    if scheme == "smtps":
        # aiosmtpd only counts STARTTLS as TLS; the whole session is encrypted here.
        kwargs = {"ssl_context": context, "authenticator": auth, "auth_require_tls": False}
    else:
        kwargs = {"tls_context": context, "require_starttls": True, "authenticator": auth}
    return TlsServer(scheme, MailServer(**kwargs).start(), auth)


@pytest.fixture(params=["smtps", "smtp+starttls"])
def tls(request: pytest.FixtureRequest, ca: trustme.CA) -> Iterator[TlsServer]:
    """A TLS server with AUTH whose certificate (for 127.0.0.1) the private CA signed."""
    running = start_tls_server(request.param, ca)
    yield running
    running.server.stop()


@pytest.fixture(params=["smtps", "smtp+starttls"])
def wrong_host(request: pytest.FixtureRequest, ca: trustme.CA) -> Iterator[TlsServer]:
    """A TLS server presenting a CA-signed certificate for another host name."""
    running = start_tls_server(request.param, ca, host="mail.elsewhere.example")
    yield running
    running.server.stop()


@pytest.fixture
def clean_env(env: dict[str, str]) -> dict[str, str]:
    """The CLI environment without a trust store override from outside."""
    for key in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        env.pop(key, None)
    return env


def add(env: dict[str, str], *addresses: str) -> None:
    for address in addresses:
        result = run({**env, "REKINDLE_NOW": ADDED}, "subscribers", "add", address)
        assert result.exit_code == 0, result.output


def send(env: dict[str, str], now: str = SEND) -> dict:
    result = run(env, "send", "--now", now, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def subscriber(env: dict[str, str], address: str) -> dict:
    result = run(env, "subscribers", "show", address, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_still_due(env: dict[str, str], address: str) -> None:
    view = subscriber(env, address)
    assert (view["lessons_sent"], view["next_lesson"], view["status"]) == (0, 1, "active")


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# --- TLS and AUTH -------------------------------------------------------------------------


def test_tls_with_auth_delivers_when_the_private_ca_is_configured(clean_env, tls, ca_file):
    """smtps:// and smtp+starttls:// log in and deliver once tls_ca_file names the private CA."""
    env = {**clean_env, "REKINDLE_SMTP_URL": tls.url(), "REKINDLE_TLS_CA_FILE": ca_file}
    addresses = [f"reader{i}@example.org" for i in range(3)]
    add(env, *addresses)
    report = send(env)
    assert report["sent"] == 3, report
    assert tls.auth.attempts == [(USER, PASSWORD)]
    assert tls.server.connections == 1
    for address in addresses:
        assert tls.server.keys(address) == ["lesson-1"]


def test_untrusted_certificate_is_refused_before_auth_and_the_lesson_waits(clean_env, tls, ca_file):
    """Without the CA: exit 75, one line about the certificate, no AUTH, no mail; later it goes."""
    env = {**clean_env, "REKINDLE_SMTP_URL": tls.url()}
    add(env, ADA)
    result = script(env, "send", "--now", SEND)
    assert result.returncode == 75, (result.stdout, result.stderr)
    line = one_error_line(result.stderr)
    assert "certificate" in line.lower()
    assert PASSWORD not in result.stderr + result.stdout
    assert tls.auth.attempts == []
    assert tls.server.messages == []
    assert_still_due(env, ADA)

    env["REKINDLE_TLS_CA_FILE"] = ca_file
    assert send(env, LATER)["sent"] == 1
    assert tls.server.keys(ADA) == ["lesson-1"]
    assert tls.auth.attempts == [(USER, PASSWORD)]


def test_certificate_for_another_host_name_is_refused(clean_env, wrong_host, ca_file):
    """A CA-signed certificate naming another host is refused: exit 75, no AUTH, no mail."""
    env = {**clean_env, "REKINDLE_SMTP_URL": wrong_host.url(), "REKINDLE_TLS_CA_FILE": ca_file}
    add(env, ADA)
    result = script(env, "send", "--now", SEND)
    assert result.returncode == 75, (result.stdout, result.stderr)
    line = one_error_line(result.stderr)
    assert "certificate" in line.lower()
    assert wrong_host.auth.attempts == []
    assert wrong_host.server.messages == []
    assert_still_due(env, ADA)


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("smtp://user:pw@mail.example.org:25", None),
        ("smtp://user@mail.example.org:25", "from-the-environment"),
    ],
)
def test_password_over_plain_smtp_to_a_remote_host_is_a_config_error(env, url, password):
    """smtp:// with credentials to a remote host exits 1 with one clear line; nothing is sent."""
    env["REKINDLE_SMTP_URL"] = url
    if password:
        env["REKINDLE_SMTP_PASSWORD"] = password
    add(env, ADA)
    result = script(env, "send", "--now", SEND)
    assert result.returncode == 1, (result.stdout, result.stderr)
    line = one_error_line(result.stderr)
    assert "mail.example.org" in line
    assert "starttls" in line.lower() or "smtps" in line.lower()
    assert "pw@" not in line and "from-the-environment" not in line
    assert_still_due(env, ADA)


def test_password_from_the_environment_is_used(clean_env, tls, ca_file):
    """A URL naming only the user logs in with REKINDLE_SMTP_PASSWORD."""
    env = {
        **clean_env,
        "REKINDLE_SMTP_URL": tls.url(password=None),
        "REKINDLE_SMTP_PASSWORD": PASSWORD,
        "REKINDLE_TLS_CA_FILE": ca_file,
    }
    add(env, ADA)
    assert send(env)["sent"] == 1
    assert tls.auth.attempts == [(USER, PASSWORD)]
    assert tls.server.keys(ADA) == ["lesson-1"]


def test_wrong_password_exits_75_with_a_clear_line(clean_env, tls, ca_file):
    """A refused login exits 75 with one line about the login; the lesson stays due."""
    env = {
        **clean_env,
        "REKINDLE_SMTP_URL": tls.url(password="not-the-password"),
        "REKINDLE_TLS_CA_FILE": ca_file,
    }
    add(env, ADA)
    result = script(env, "send", "--now", SEND)
    assert result.returncode == 75, (result.stdout, result.stderr)
    line = one_error_line(result.stderr)
    assert "login" in line.lower() or "auth" in line.lower()
    assert "not-the-password" not in result.stderr + result.stdout
    # smtplib tries each mechanism the server offers (PLAIN, then LOGIN) before giving up.
    assert tls.auth.attempts
    assert set(tls.auth.attempts) == {(USER, "not-the-password")}
    assert tls.server.messages == []
    assert_still_due(env, ADA)


# --- one connection per run ---------------------------------------------------------------


def test_one_connection_serves_a_whole_run(env, smtp_server):
    """Sending to several subscribers opens exactly one SMTP connection."""
    env["REKINDLE_SMTP_URL"] = smtp_server.url
    addresses = [f"reader{i}@example.org" for i in range(6)]
    add(env, *addresses)
    assert send(env)["sent"] == 6
    assert smtp_server.connections == 1
    assert sorted(a for m in smtp_server.messages for a in m.rcpt_tos) == sorted(addresses)


# --- the Maildir outbox -------------------------------------------------------------------


def test_outbox_is_the_default_without_an_smtp_url(env):
    """With no SMTP URL the lesson lands in <outbox>/new, a Maildir any mail client reads."""
    outbox = Path(env["REKINDLE_OUTBOX"])
    add(env, ADA)
    report = send(env)
    assert report["sent"] == 1, report
    assert len(list((outbox / "new").iterdir())) == 1
    box = mailbox.Maildir(outbox, factory=None, create=False)
    (stored,) = list(box)
    message = email.message_from_bytes(stored.as_bytes(), policy=email.policy.default)
    assert {k.lower() for k in message} >= LESSON_HEADERS
    assert [a.addr_spec for a in message["To"].addresses] == [ADA]
    assert str(message["X-Rekindle-Key"]) == "lesson-1"
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    (delivery,) = [d for d in subscriber(env, ADA)["deliveries"] if d["key"] == "lesson-1"]
    assert str(message["Message-ID"]) == delivery["message_id"]
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]


def test_unwritable_outbox_exits_75_and_the_lesson_goes_out_once_fixed(env, tmp_path):
    """An outbox under a regular file: exit 75, one clear line; the next run delivers."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("in the way\n")
    outbox = blocker / "outbox"
    env["REKINDLE_OUTBOX"] = str(outbox)
    add(env, ADA)
    result = script(env, "send", "--now", SEND)
    assert result.returncode == 75, (result.stdout, result.stderr)
    line = one_error_line(result.stderr)
    assert "outbox" in line.lower()
    assert_still_due(env, ADA)

    blocker.unlink()  # the operator clears the way
    assert send(env, LATER)["sent"] == 1
    (stored,) = list(mailbox.Maildir(outbox, factory=None, create=False))
    assert str(stored["X-Rekindle-Key"]) == "lesson-1"


def test_an_existing_empty_outbox_folder_becomes_a_maildir(env):
    """An outbox folder that exists but is empty (a fresh volume mount) still takes mail."""
    outbox = Path(env["REKINDLE_OUTBOX"])
    outbox.mkdir()
    add(env, ADA)
    result = run(env, "send", "--now", SEND, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sent"] == 1
    assert len(list((outbox / "new").iterdir())) == 1
