"""A real SMTP server for tests: aiosmtpd on a free loopback port that keeps every message.

It counts connections and can be scripted to answer any stage with a given
reply, or to drop the connection, the way real relays misbehave.
"""

from __future__ import annotations

import email
import email.policy
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

# Every header a lesson carries (when no Reply-To is configured).
LESSON_HEADERS = frozenset(
    {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "x-rekindle-key",
        "mime-version",
        "content-type",
    }
)


def free_port() -> int:
    """A TCP port nobody listens on right now (aiosmtpd cannot bind port 0 itself)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    """One message as the server accepted it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class Script:
    """Replies to give instead of accepting; each value is a reply or 'drop'."""

    mail: list[str] = field(default_factory=list)
    rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply, every time
    rcpt_once: dict[str, list[str]] = field(default_factory=dict)  # address -> replies, in turn
    data: list[str] = field(default_factory=list)  # one reply per DATA, in turn
    ehlo: str | None = None


class RecordingHandler:
    """aiosmtpd handler: keeps accepted messages, answers from its Script."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.script = Script()
        self.lock = threading.Lock()

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        if self.script.ehlo:
            return [self.script.ehlo]
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server: SMTP, session: Any, envelope: Any, hostname: str) -> str:
        if self.script.ehlo:
            return self.script.ehlo
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.script.mail:
            return self._reply(server, self.script.mail.pop(0))
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        queued = self.script.rcpt_once.get(address)
        if queued:
            return self._reply(server, queued.pop(0))
        if address in self.script.rcpt:
            return self._reply(server, self.script.rcpt[address])
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        if self.script.data:
            reply = self.script.data.pop(0)
            if reply != "accept-then-drop":
                return self._reply(server, reply)
            self._keep(envelope)
            return self._reply(server, "drop")
        self._keep(envelope)
        return "250 2.0.0 Message accepted for delivery"

    def _keep(self, envelope: Any) -> None:
        with self.lock:
            self.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )

    @staticmethod
    def _reply(server: SMTP, reply: str) -> str:
        if reply == "drop":
            server.transport.close()
            return "421 closing"
        return reply


class CountingController(Controller):
    """A Controller that counts the SMTP connections it has served."""

    def __init__(self, handler: RecordingHandler, **kwargs: Any) -> None:
        self.connections = 0
        super().__init__(handler, **kwargs)

    def factory(self) -> SMTP:
        self.connections += 1
        return super().factory()


class MailServer:
    """A running test SMTP server and what it received."""

    def __init__(self, **kwargs: Any) -> None:
        self.handler = RecordingHandler()
        self.port = free_port()
        self.controller = CountingController(
            self.handler, hostname="127.0.0.1", port=self.port, **kwargs
        )

    def start(self) -> MailServer:
        self.controller.start()
        self.controller.connections = 0  # the readiness probe is not a client
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def script(self) -> Script:
        return self.handler.script

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    @property
    def connections(self) -> int:
        return self.controller.connections

    def to(self, address: str) -> list[Received]:
        return [m for m in self.messages if address in m.rcpt_tos]

    def keys(self, address: str) -> list[str]:
        return [str(m.message["X-Rekindle-Key"]) for m in self.to(address)]

    def lessons(self, address: str) -> list[str]:
        """The course lessons `address` received, in order (reminders and notices left out)."""
        return [key for key in self.keys(address) if key.startswith("lesson-")]


def password_checker(user: str, password: str) -> Callable[..., AuthResult]:
    """An aiosmtpd authenticator accepting one user."""

    def check(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        # handled=False: aiosmtpd answers a refusal with 535 itself.
        return AuthResult(success=ok, handled=False)

    return check


class GreetingRefuser:
    """A server that answers every connection with one reply line and hangs up."""

    def __init__(self, reply: str = "554 5.3.2 No service for you") -> None:
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.reply.encode() + b"\r\n")

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()
