"""A real SMTP server for tests: aiosmtpd on a free loopback port that keeps every message.

It counts connections and can be scripted to answer any stage (greeting, EHLO,
AUTH, MAIL, RCPT, the DATA command, the final dot) with a given reply, to hang
up, or to fall silent until the client times out, the way real relays misbehave.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, AnyStr

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


# Script values besides reply lines such as "451 4.7.1 Greylisted".
PASS = "pass"  # in a list of replies in turn: this time, go on as normal
DROP = "drop"  # hang up without a word
STALL = "stall"  # say nothing for Script.stall_seconds, then hang up (the client times out)


@dataclass
class Received:
    """One message as the server accepted it (or saw it, in RecordingHandler.seen)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    at: float = 0.0  # time.monotonic() when the final dot arrived

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class Script:
    """Replies to give instead of accepting.

    Each value is a reply line, DROP or STALL; in the lists taken in turn also
    PASS (accept this one). A 421 reply is followed by hanging up, as RFC 5321
    §3.8 says. A refused DATA command leaves the transaction open (as aiosmtpd's
    own refusals do): the client has to send RSET before its next MAIL.
    """

    mail: list[str] = field(default_factory=list)  # one reply per MAIL, in turn
    rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply, every time
    rcpt_once: dict[str, list[str]] = field(default_factory=dict)  # address -> replies, in turn
    data: list[str] = field(default_factory=list)  # one reply per final dot, in turn
    ehlo: str | None = None  # every EHLO and HELO
    greeting: list[str] = field(default_factory=list)  # one per connection, in turn, then hang up
    data_cmd: list[str] = field(default_factory=list)  # one reply per DATA command (before 354)
    auth: str | None = None  # every AUTH command (the server needs an authenticator)
    starttls: str | None = None  # every STARTTLS command (the server needs a tls_context)
    rset: str | None = None  # every RSET
    stall_seconds: float = 5.0


class RecordingHandler:
    """aiosmtpd handler: keeps accepted messages, answers from its Script."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.seen: list[Received] = []  # every message that reached the final dot, kept or not
        self.quits = 0  # QUIT commands received (a client ending its session properly)
        self.script = Script()
        self.lock = threading.Lock()

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        if self.script.ehlo:
            return [await self.answer(server, self.script.ehlo)]
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server: SMTP, session: Any, envelope: Any, hostname: str) -> str:
        if self.script.ehlo:
            return await self.answer(server, self.script.ehlo)
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_QUIT(self, server: SMTP, session: Any, envelope: Any) -> str:
        with self.lock:
            self.quits += 1
        return "221 2.0.0 Bye"

    async def handle_RSET(self, server: SMTP, session: Any, envelope: Any) -> str:
        return await self.answer(server, self.script.rset) if self.script.rset else "250 OK"

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = self.script.mail.pop(0) if self.script.mail else PASS
        if reply != PASS:
            return await self.answer(server, reply)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        queued = self.script.rcpt_once.get(address)
        reply = queued.pop(0) if queued else self.script.rcpt.get(address, PASS)
        if reply != PASS:
            return await self.answer(server, reply)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        with self.lock:
            self.seen.append(self._received(envelope))
        reply = self.script.data.pop(0) if self.script.data else PASS
        if reply == "accept-then-drop":
            self._keep(envelope)
            return await self.answer(server, DROP)
        if reply != PASS:
            return await self.answer(server, reply)
        self._keep(envelope)
        return "250 2.0.0 Message accepted for delivery"

    def _keep(self, envelope: Any) -> None:
        with self.lock:
            self.messages.append(self._received(envelope))

    @staticmethod
    def _received(envelope: Any) -> Received:
        return Received(
            envelope.mail_from,
            list(envelope.rcpt_tos),
            envelope.original_content,
            time.monotonic(),
        )

    async def answer(self, server: SMTP, reply: str) -> str:
        """The reply line to send for a scripted `reply`, hanging up first for DROP and STALL."""
        if reply == STALL:
            try:
                await asyncio.sleep(self.script.stall_seconds)
            finally:  # also when the client gave up first and the session is being torn down
                if server.transport is not None:
                    server.transport.close()
            reply = DROP
        if reply == DROP:
            if server.transport is not None:
                server.transport.close()
            return "421 closing"  # never reaches the client: the connection is closed
        return reply


class ScriptedSMTP(SMTP):
    """aiosmtpd's SMTP with the greeting, the DATA command and AUTH answered from the Script."""

    event_handler: RecordingHandler

    async def push(self, status: AnyStr) -> None:
        await super().push(status)
        line = status if isinstance(status, str) else status.decode("ascii", "replace")
        if line.startswith("421") and self.transport is not None:
            self.transport.close()  # 421: the server closes the channel (RFC 5321 §3.8)

    async def _handle_client(self) -> None:
        script = self.event_handler.script
        reply = script.greeting.pop(0) if script.greeting else PASS
        if reply == PASS:
            await super()._handle_client()
            return
        try:
            line = await self.event_handler.answer(self, reply)
            if self.transport is not None:
                await self.push(line)
                if line.startswith("554"):
                    await self._await_quit()
        finally:
            if self.transport is not None:
                self.transport.close()

    async def _await_quit(self) -> None:
        """After a 554 greeting, wait for the client's QUIT (RFC 5321 §3.1), refusing the rest."""
        while self.transport is not None and not self.transport.is_closing():
            try:
                line = await asyncio.wait_for(self._reader.readline(), 5)
            except (TimeoutError, ConnectionError):
                return
            if not line:
                return
            if line.strip().upper() == b"QUIT":
                await self.push(await self.event_handler.handle_QUIT(self, None, None))
                return
            await self.push("503 5.5.1 Bad sequence of commands")

    async def smtp_DATA(self, arg: str) -> None:
        script = self.event_handler.script
        waiting = self.envelope is not None and bool(self.envelope.rcpt_tos) and not arg
        reply = script.data_cmd.pop(0) if script.data_cmd and waiting else PASS
        if reply == PASS:
            await super().smtp_DATA(arg)
            return
        await self.push(await self.event_handler.answer(self, reply))

    async def smtp_STARTTLS(self, arg: str) -> None:
        reply = self.event_handler.script.starttls
        if reply is None:
            await super().smtp_STARTTLS(arg)
            return
        await self.push(await self.event_handler.answer(self, reply))

    async def smtp_AUTH(self, arg: str) -> None:
        reply = self.event_handler.script.auth
        if reply is None:
            await super().smtp_AUTH(arg)
            return
        await self.push(await self.event_handler.answer(self, reply))


class CountingController(Controller):
    """A Controller that counts the SMTP connections it has served."""

    def __init__(self, handler: RecordingHandler, **kwargs: Any) -> None:
        self.connections = 0
        super().__init__(handler, **kwargs)

    def factory(self) -> SMTP:
        self.connections += 1
        return ScriptedSMTP(self.handler, **self.SMTP_kwargs)


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
    def seen(self) -> list[Received]:
        """Every message whose data reached the final dot, whether it was then accepted or not."""
        return self.handler.seen

    @property
    def connections(self) -> int:
        return self.controller.connections

    @property
    def quits(self) -> int:
        """How many sessions the client ended with QUIT."""
        return self.handler.quits

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
