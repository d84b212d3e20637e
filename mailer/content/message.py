"""MIME assembly: constant headers encoded once per message kind, bytes built per recipient."""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.utils import format_datetime, formataddr, parseaddr
from typing import TYPE_CHECKING

from mailer.config import Settings
from mailer.content import rfc2047
from mailer.content.render import Recipient, Rendered, Slots

if TYPE_CHECKING:
    from mailer.content.dkim import Signer

_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
CRLF = b"\r\n"
SOFT_BREAK = b"=\r\n"  # quoted-printable: a line break that is not in the text
MAX_LINE = 78  # RFC 5322 §2.1.1: SHOULD; folding keeps lines near it, never past 998
ADDRESS_WORD = MAX_LINE - len("Reply-To: ")  # the longest encoded-word in an address field


@dataclass(frozen=True)
class Outgoing:
    """One message ready for a transport: envelope plus the exact bytes to send."""

    sender: str
    recipient: str
    data: bytes
    message_id: str
    key: str

    @property
    def needs_smtputf8(self) -> bool:
        """True when an address is not ASCII (RFC 6531)."""
        return not (self.sender.isascii() and self.recipient.isascii())


@dataclass(frozen=True)
class Sender:
    """Who the mail is from and which list it belongs to (the same for every message)."""

    from_header: str
    address: str
    domain: str
    list_id: str
    reply_to: str | None = None
    unsubscribe_address: str | None = None
    bounce_address: str = ""  # the envelope sender's base; VERP adds +<token> (README: Bounces)

    @classmethod
    def from_settings(cls, settings: Settings) -> Sender:
        """The sender described by `from`, `reply_to`, `list_id`, `unsubscribe_address`."""
        return cls(
            from_header=settings.from_address,
            address=settings.sender_email,
            domain=settings.sending_domain,
            list_id=settings.list_id_header,
            reply_to=settings.reply_to,
            unsubscribe_address=settings.unsubscribe_address,
            bounce_address=settings.envelope_address,
        )

    def envelope(self, token: str | None) -> str:
        """The envelope sender (MAIL FROM): `bounce_address` with `+token` in its local part."""
        base = self.bounce_address or self.address
        if not token:
            return base
        local, _, domain = base.rpartition("@")
        return f"{local}+{token}@{domain}"


def header(name: str, value: str, *, utf8: bool = False) -> bytes:
    """One unstructured header field (Subject, ...): control characters removed, folded.

    Text that is not ASCII, or that holds '=?' (it would be read as an encoded-word),
    becomes RFC 2047 encoded-words of at most 75 characters; with `utf8` (an SMTPUTF8
    message, RFC 6532) non-ASCII text may stay raw UTF-8.
    """
    value = _UNSAFE.sub(" ", value)
    if "=?" in value or not (utf8 or value.isascii()):
        return f"{name}: {rfc2047.fold(value, len(name) + 2)}\r\n".encode()
    return f"{name}: {_fold(len(name) + 2, value)}\r\n".encode()


def address_header(name: str, display: str | None, email: str) -> bytes:
    """One address field (From, To, Reply-To): `address(display, email)`, folded."""
    return f"{name}: {_fold(len(name) + 2, address(display, email))}\r\n".encode()


def _fold(used: int, value: str) -> str:
    """Fold at spaces so lines stay near 78 characters; unfolding gives `value` back."""
    if used + len(value) <= MAX_LINE:
        return value
    lines: list[str] = []
    current = ""
    for word in value.split(" "):
        if current and used + len(current) + 1 + len(word) > MAX_LINE:
            lines.append(current)
            current, used = word, 1
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "\r\n ".join(lines)


def address(name: str | None, email: str) -> str:
    """An address for From/To on one line: the display name quoted or RFC 2047-encoded.

    A name that is not ASCII, or that looks like an encoded-word ('=?utf-8?b?...?='),
    is sent as encoded-words, so every reader shows exactly the name that was stored.
    """
    name = _UNSAFE.sub(" ", name or "").strip()
    if not name:
        return email
    if "=?" in name or (email.isascii() and not name.isascii()):
        # Words short enough that "Reply-To: " and the first of them fit in 78 characters.
        return " ".join(rfc2047.words(name, ADDRESS_WORD, ADDRESS_WORD)) + f" <{email}>"
    if email.isascii():
        return " ".join(formataddr((name, email)).split())
    # An SMTPUTF8 message is 8-bit anyway: the name may stay UTF-8, quoted.
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{email}>'


def _sender_address(from_header: str) -> tuple[str, str]:
    """(display name, address) of a configured From or Reply-To, encoded-words decoded."""
    display, email = parseaddr(from_header)
    if "=?" in display:
        with contextlib.suppress(HeaderParseError, LookupError, UnicodeDecodeError):
            display = str(make_header(decode_header(display)))
    return display, email


class MessageBuilder:
    """Builds the messages of one kind (a lesson, a notice): only per-recipient parts vary."""

    def __init__(
        self,
        sender: Sender,
        key: str,
        subject: str,
        content: Rendered,
        signer: Signer | None = None,
    ) -> None:
        self.sender = sender
        self.key = key
        self.content = content
        self._boundary = b"=_rekindle_" + hashlib.sha1(key.encode()).hexdigest()[:20].encode()  # noqa: S324
        fixed = [address_header("From", *_sender_address(sender.from_header))]
        if sender.reply_to:
            fixed.append(address_header("Reply-To", *_sender_address(sender.reply_to)))
        fixed += [
            header("Subject", subject),
            header("List-Id", sender.list_id),
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            header("X-Rekindle-Key", key),
            b"MIME-Version: 1.0\r\n",
            b'Content-Type: multipart/alternative; boundary="' + self._boundary + b'"\r\n',
        ]
        self._fixed = b"".join(fixed)
        # DKIM (README, "Getting into the inbox"): the shared headers are hashed here, once.
        self._seal = signer.seal(self._fixed) if signer else None
        canonical = self._seal.canonical if self._seal else None
        self._text = EncodedSlots(content.text, canonical)
        self._html = EncodedSlots(content.html, canonical)
        self._parts = (
            b"--" + self._boundary + b'\r\nContent-Type: text/plain; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            b"\r\n--" + self._boundary + b'\r\nContent-Type: text/html; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
            b"\r\n--" + self._boundary + b"--\r\n",
        )
        self._parts_canonical = tuple(map(canonical, self._parts)) if canonical else ()
        self._mailto = (
            f"<mailto:{sender.unsubscribe_address}?subject=unsubscribe>"
            if sender.unsubscribe_address
            else None
        )

    def build(
        self,
        *,
        email: str,
        name: str | None,
        first_name: str,
        message_id: str,
        unsubscribe_url: str,
        date: datetime,
        confirm_url: str = "",
        envelope_sender: str | None = None,
        letter_url: str = "",
        first_letter: str = "",
        course_url: str = "",
    ) -> Outgoing:
        """The complete message for one recipient (envelope sender: `bounce_address`)."""
        recipient = Recipient(
            first_name, email, unsubscribe_url, confirm_url, letter_url, first_letter, course_url
        )
        raw, escaped = self.content.values(recipient)
        unsubscribe = f"<{_UNSAFE.sub('', unsubscribe_url)}>"
        if self._mailto:
            unsubscribe += ",\r\n " + self._mailto
        personal = b"".join(
            (
                address_header("To", name, email),
                f"Date: {format_datetime(date.astimezone(UTC))}\r\n".encode(),
                f"Message-ID: {message_id}\r\n".encode(),
                f"List-Unsubscribe: {unsubscribe}\r\n".encode(),
            )
        )
        text_start, html_start, end = self._parts
        if self._seal is None:
            text, html = self._text.fill(raw), self._html.fill(escaped)
            signatures = b""
        else:
            text, text_canonical = self._text.fill_canonical(raw)
            html, html_canonical = self._html.fill_canonical(escaped)
            c_text_start, c_html_start, c_end = self._parts_canonical
            canonical = b"".join(
                (c_text_start, text_canonical, c_html_start, html_canonical, c_end)
            )
            signatures = self._seal.signatures(personal, canonical, date)
        body = (text_start, text, html_start, html, end)
        data = b"".join((signatures, personal, self._fixed, b"\r\n", *body))
        sender = envelope_sender or self.sender.envelope(None)
        return Outgoing(sender, email, data, message_id, self.key)


def _qp(text: str) -> bytes:
    """Quoted-printable with CRLF soft line breaks (binascii uses the text's own line ends,
    and LF for a piece that has none)."""
    data = text.encode("utf-8")
    encoded = binascii.b2a_qp(data, istext=True)
    if b"\r\n" not in data:
        encoded = encoded.replace(b"=\n", b"=\r\n")
    return encoded


def _qp_value(text: str) -> bytes:
    """A piece of a part, quoted-printable, ready to be followed by a soft line break:
    its last line keeps room for that "=" (RFC 2045 allows 76 characters, "=" included)."""
    encoded = _qp(text)
    start = encoded.rfind(b"\n") + 1
    if len(encoded) - start <= 75:
        return encoded
    cut = start + 73
    while encoded[cut - 1 : cut] == b"=" or encoded[cut - 2 : cut - 1] == b"=":
        cut -= 1  # never inside an =XX escape
    return encoded[:cut] + SOFT_BREAK + encoded[cut:]


class EncodedSlots:
    """A part's text, quoted-printable encoded once; each recipient's values encoded alone.

    Every value sits between two soft line breaks ("=" CRLF), so each encoded
    piece starts a line of its own and stays within QP's 76 characters; a
    decoder joins the pieces back into exactly the personalised text.
    """

    def __init__(self, slots: Slots, canonical: Callable[[bytes], bytes] | None = None) -> None:
        self.names = slots.names
        *before, last = slots.literals  # every piece but the last is followed by "=" CRLF
        # The part ends with one line break (RFC 2046: the CRLF before the boundary is the
        # boundary's own), so the last line of the text is a whole line.
        self.literals = [*map(_qp_value, before), _qp(last).rstrip(b"\r\n") + CRLF]
        # DKIM's relaxed body, piece by piece (mailer.content.dkim.canonical_lines): a
        # piece ends before "=" or with CRLF and starts after LF, so no run of spaces
        # spans two of them. The literals are canonicalised here, once.
        self._canonical = canonical
        self._canonical_literals = [canonical(x) for x in self.literals] if canonical else []

    def fill(self, values: Mapping[str, str]) -> bytes:
        """The encoded part for one recipient's `values`."""
        out = [self.literals[0]]
        for name, literal in zip(self.names, self.literals[1:], strict=True):
            out += (SOFT_BREAK, _qp_value(values[name]), SOFT_BREAK, literal)
        return b"".join(out)

    def fill_canonical(self, values: Mapping[str, str]) -> tuple[bytes, bytes]:
        """The encoded part for one recipient's `values`, and its relaxed canonical form."""
        assert self._canonical is not None
        canonical = self._canonical
        out = [self.literals[0]]
        same = [self._canonical_literals[0]]
        for name, literal, literal_canonical in zip(
            self.names, self.literals[1:], self._canonical_literals[1:], strict=True
        ):
            value = _qp_value(values[name])
            out += (SOFT_BREAK, value, SOFT_BREAK, literal)
            same += (SOFT_BREAK, canonical(value), SOFT_BREAK, literal_canonical)
        return b"".join(out), b"".join(same)
