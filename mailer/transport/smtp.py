"""SMTP delivery over one reused connection: smtp://, smtp+starttls:// and smtps:// (RFC 8314)."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import smtplib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self
from urllib.parse import unquote, urlsplit

from mailer.errors import ConfigError, TransportUnavailable, describe
from mailer.transport.base import MessageRefused, RecipientRefused, TemporaryFailure, Withdrawn
from mailer.transport.relays import DEFAULT_PORTS

if TYPE_CHECKING:
    from mailer.content.message import Outgoing

CONNECT_TIMEOUT = 30.0
# RFC 5321 §4.5.3.2: up to 10 minutes for the reply to the final dot; a shorter
# timeout only turns slow acceptances into duplicates.
SESSION_TIMEOUT = 600.0
QUIT_TIMEOUT = 10.0  # for the 221 after a refused session: a courtesy, not worth a long wait


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (where plain-text AUTH is acceptable)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SmtpTransport:
    """Sends through an SMTP relay, connecting on the first message and reconnecting on drops."""

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        ca_file: Path | None = None,
        local_hostname: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ConfigError("smtp_url must be smtp://, smtp+starttls:// or smtps://host[:port]")
        self.scheme = parts.scheme
        self.host = parts.hostname
        try:
            self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise ConfigError("smtp_url has an invalid port") from None
        self.username = unquote(parts.username) if parts.username else None
        self._password = (unquote(parts.password) if parts.password else None) or password
        if self.username and self._password is None:
            raise ConfigError("smtp_url names a user but no password: set REKINDLE_SMTP_PASSWORD")
        if self.username and self.scheme == "smtp" and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to send the SMTP password unencrypted to {self.host}: "
                "use smtp+starttls:// or smtps://"
            )
        self._ca_file = ca_file
        self._local_hostname = local_hostname
        self._smtp: smtplib.SMTP | None = None
        self.description = f"the SMTP server {self.host}:{self.port}"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Say QUIT and close the connection, if one is open."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def _open(self, context: ssl.SSLContext | None) -> smtplib.SMTP:
        """A connection that has read the server's greeting; refused unless it is 220."""
        smtp: smtplib.SMTP
        if self.scheme == "smtps":
            smtp = smtplib.SMTP_SSL(
                local_hostname=self._local_hostname, timeout=CONNECT_TIMEOUT, context=context
            )
        else:
            smtp = smtplib.SMTP(local_hostname=self._local_hostname, timeout=CONNECT_TIMEOUT)
        # The name TLS checks the certificate against, as SMTP(host) would have set it.
        smtp._host = self.host  # type: ignore[attr-defined]
        try:
            # Not SMTP(host, port): it hangs up on a refused greeting without the QUIT a
            # server that answers 554 waits for (RFC 5321 §3.1).
            code, text = smtp.connect(self.host, self.port)
        except BaseException:
            _discard(smtp)
            raise
        if code != 220:
            _quit(smtp, unless=code)
            raise smtplib.SMTPConnectError(code, text)
        return smtp

    def _tls_context(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=str(self._ca_file) if self._ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load tls_ca_file {self._ca_file}: {exc}") from None

    def _connect(self) -> smtplib.SMTP:
        context = self._tls_context() if self.scheme != "smtp" else None
        smtp: smtplib.SMTP | None = None
        try:
            smtp = self._open(context)
            if smtp.sock is not None:
                smtp.sock.settimeout(SESSION_TIMEOUT)
                # The final dot may follow the content after a pause (see send):
                # Nagle's algorithm would hold it back for the peer's delayed ACK.
                smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _hello(smtp)
            if self.scheme == "smtp+starttls":
                if not smtp.has_extn("starttls"):
                    raise TransportUnavailable(f"{self.description} does not offer STARTTLS")
                smtp.starttls(context=context)
                _hello(smtp)
            if self.username:
                _login(smtp, self.username, self._password or "")
        # A session refused after the greeting ends with QUIT, as RFC 5321 §4.1.1.10
        # asks (a server that already hung up, or a failed TLS handshake, gets none).
        except TransportUnavailable:
            _quit(smtp)
            raise
        except smtplib.SMTPAuthenticationError as exc:
            _quit(smtp, unless=exc.smtp_code)
            raise TransportUnavailable(
                f"{self.description} refused the login for {self.username}: {_reply(exc)}"
            ) from None
        except smtplib.SMTPResponseException as exc:
            _quit(smtp, unless=exc.smtp_code)
            raise TransportUnavailable(
                f"{self.description} refused the session: {_reply(exc)}"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            _discard(smtp)
            raise TransportUnavailable(
                f"{self.description} presented a certificate that cannot be trusted "
                f"({exc.verify_message}); set tls_ca_file if it uses a private CA"
            ) from None
        except smtplib.SMTPException as exc:  # no AUTH mechanism in common; a hang-up
            _quit(smtp)
            raise TransportUnavailable(
                f"cannot connect to {self.description}: {describe(exc)}"
            ) from None
        except OSError as exc:
            _discard(smtp)
            raise TransportUnavailable(
                f"cannot connect to {self.description}: {describe(exc)}"
            ) from None
        return smtp

    def send(self, message: Outgoing, gate: Callable[[], None] | None = None) -> None:
        """Deliver one message, or raise the DeliveryError that says what happened.

        `gate`, if given, is called after the content has gone and before the
        final dot: the server cannot accept this message before it returns.
        """
        if self._smtp is None:
            self._smtp = self._connect()
        smtp = self._smtp
        options: list[str] = []
        if message.needs_smtputf8:
            if not smtp.has_extn("smtputf8"):
                raise MessageRefused(
                    f"{self.description} does not support SMTPUTF8, needed for {message.recipient}"
                )
            options = ["SMTPUTF8", "BODY=8BITMIME"]
        try:
            _transaction(smtp, message, options, gate)
        except Withdrawn:
            self._drop()  # mid-DATA: hanging up is the only way to take the message back
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            self._fail(code, text, permanent=RecipientRefused)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            self._fail(exc.smtp_code, exc.smtp_error, permanent=MessageRefused)
        except smtplib.SMTPResponseException as exc:
            self._fail(exc.smtp_code, exc.smtp_error, permanent=MessageRefused)
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            raise TemporaryFailure(
                f"connection to {self.description} lost: {describe(exc)}"
            ) from None

    def _fail(
        self, code: int, text: bytes | str, permanent: type[MessageRefused | RecipientRefused]
    ) -> None:
        reply = f"{code} {_decode(text)}"
        if code == 421 or not 400 <= code < 600:
            self._drop()
            raise TemporaryFailure(reply)
        self._reset()
        if code < 500:
            raise TemporaryFailure(reply)
        raise permanent(reply)

    def _reset(self) -> None:
        """End the failed transaction (RSET) so the next message starts clean; drop if it can't.

        smtplib leaves the transaction open when the DATA command itself is
        refused: without RSET the next MAIL FROM would get 503.
        """
        if self._smtp is None:
            return
        try:
            code, _ = self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            code = 0
        if code != 250:
            smtp, self._smtp = self._smtp, None
            _quit(smtp, unless=code)  # the server refused to go on: end the session properly

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        _discard(smtp)


_LEADING_DOT = re.compile(rb"(?m)^\.")


def _transaction(
    smtp: smtplib.SMTP, message: Outgoing, options: list[str], gate: Callable[[], None] | None
) -> None:
    """MAIL, RCPT, DATA and the content, then `gate`, then the final dot (RFC 5321 §3.3).

    smtplib's sendmail() does the same in one call; this splits it so the run
    can record the previous message while this one's content travels.
    """
    # The addresses were checked when stored; smtplib's quoteaddr() would parse them again.
    smtp.command_encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
    smtp.putcmd("mail", f"FROM:<{message.sender}>" + "".join(" " + o for o in options))
    code, text = smtp.getreply()
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, text, message.sender)
    smtp.putcmd("rcpt", f"TO:<{message.recipient}>")
    code, text = smtp.getreply()
    if code not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({message.recipient: (code, text)})
    smtp.putcmd("data")
    code, text = smtp.getreply()
    if code != 354:
        raise smtplib.SMTPDataError(code, text)
    data = message.data
    if data.startswith(b".") or b"\n." in data:
        data = _LEADING_DOT.sub(b"..", data)  # dot-stuffing (RFC 5321 §4.5.2)
    smtp.send(data + b"\r\n")
    if gate is not None:
        gate()
    smtp.send(b".\r\n")
    code, text = smtp.getreply()
    if code != 250:
        raise smtplib.SMTPDataError(code, text)


def _hello(smtp: smtplib.SMTP) -> None:
    """EHLO (HELO for an old server that does not know it); any other refusal ends the session."""
    code, text = smtp.ehlo()
    if code in (500, 502):
        code, text = smtp.helo()
    if not 200 <= code < 300:
        raise smtplib.SMTPResponseException(code, text)


# Preferred order: PLAIN and LOGIN only ever run inside TLS (or to a loopback relay).
_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")


def _login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """AUTH with the first mechanism both sides know; the server's reply if it refuses.

    Unlike smtplib's login(), a refusal is not followed by the next mechanism on
    what may be a closed connection (a 421), so the reply reaches the operator.
    """
    offered = smtp.esmtp_features.get("auth", "").upper().split()
    mechanism = next((m for m in _MECHANISMS if m in offered), None)
    if mechanism is None:
        raise smtplib.SMTPNotSupportedError("the server offers no AUTH mechanism rekindle knows")
    smtp.user, smtp.password = user, password
    method = getattr(smtp, "auth_" + mechanism.lower().replace("-", "_"))
    smtp.auth(mechanism, method, initial_response_ok=True)


def _quit(smtp: smtplib.SMTP | None, unless: int | None = None) -> None:
    """Say QUIT (waiting briefly for the 221), then close; nothing to say after a 421 or
    when nothing was ever read (the server has gone)."""
    if smtp is None:
        return
    if unless not in (421, 0) and smtp.sock is not None:
        try:
            smtp.sock.settimeout(QUIT_TIMEOUT)
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass
    _discard(smtp)


def _discard(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        with contextlib.suppress(OSError):
            smtp.close()


def _decode(text: bytes | str) -> str:
    value = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return " ".join(value.split())


def _reply(exc: smtplib.SMTPResponseException) -> str:
    return f"{exc.smtp_code} {_decode(exc.smtp_error)}"
