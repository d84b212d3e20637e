"""DKIM signatures (RFC 6376, RFC 8463) for every message: README, "Getting into the inbox".

Relaxed/relaxed canonicalisation, no l=, `h=` naming From twice (over-signed: a
second From added on the way breaks the signature), To, Subject, Date,
Message-ID, Reply-To when present, List-Id, List-Unsubscribe,
List-Unsubscribe-Post, MIME-Version and Content-Type. One DKIM-Signature per key.

The headers a message kind shares are canonicalised and hashed once per kind
(`Signer.seal`): `h=` lists them first, so each recipient's header hash starts
from a copy of that hash. Per recipient there is the body hash, the four
personal headers, and one private-key operation per key.

dkimpy's parser and canonicalisation are imported when first used: importing it
takes about 0.1 s (dnspython), which a run with nothing to send does not pay.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailer.content.dkimkey import DkimKey

# The header fields signed when present, as lower-case names (README, "### DKIM").
SIGNED = frozenset(
    {
        "from",
        "reply-to",
        "subject",
        "list-id",
        "list-unsubscribe-post",
        "mime-version",
        "content-type",
        "to",
        "date",
        "message-id",
        "list-unsubscribe",
    }
)
B64_LINE = 72  # characters of b= per folded line


def canonical_headers(block: bytes) -> list[tuple[str, bytes]]:
    """The SIGNED fields of a header block as (lower-case name, relaxed "name:value CRLF")."""
    from dkim import rfc822_parse
    from dkim.canonicalization import Relaxed

    fields, _ = rfc822_parse(block)
    out = []
    for name, value in Relaxed.canonicalize_headers(fields):
        text = name.decode("ascii")
        if text in SIGNED:
            out.append((text, name + b":" + value))
    return out


def canonical_lines(piece: bytes) -> bytes:
    """`piece` of a body with the line-local rules of the relaxed body (RFC 6376 §3.4.4):
    a space or tab before a line break removed, every other run of them made one space.

    The canonical body of pieces joined is the pieces' canonical forms joined, as long as
    no run of spaces spans two pieces and the end of the body is left as it is: so the
    builder canonicalises its constant text once and each recipient's values alone. A
    piece with no tab, no two spaces and no space before a line break (quoted-printable
    text mostly) is already canonical, and is not scanned space by space.
    """
    if b"\t" not in piece and b"  " not in piece and b" \r\n" not in piece:
        return piece
    from dkim.canonicalization import compress_whitespace, strip_trailing_whitespace

    return bytes(compress_whitespace(strip_trailing_whitespace(piece)))


def canonical_body(body: bytes) -> bytes:
    """The relaxed body (RFC 6376 §3.4.4), as dkimpy makes it."""
    lines = canonical_lines(body)
    if lines.endswith(b"\r\n") and not lines.endswith(b"\r\n\r\n") and lines != b"\r\n":
        return lines
    from dkim.canonicalization import Relaxed

    return bytes(Relaxed.canonicalize_body(body))


class Signer:
    """Signs with each of `keys` in turn; makes a Seal per message kind."""

    def __init__(self, keys: Sequence[DkimKey]) -> None:
        self.keys = tuple(keys)

    def seal(self, shared: bytes) -> Seal:
        """The signing state for the messages whose header block `shared` is common to all."""
        return Seal(self.keys, shared)


class Seal:
    """One message kind's signing: its shared headers hashed once, per key."""

    def __init__(self, keys: Sequence[DkimKey], shared: bytes) -> None:
        fields = canonical_headers(shared)
        self._names = [name for name, _ in fields]
        self._shared = hashlib.sha256(b"".join(canonical for _, canonical in fields))
        self._keys = tuple(keys)
        self.canonical = canonical_lines  # for the body's pieces (MessageBuilder)
        self._tags = [
            f"v=1; a={key.algorithm}; c=relaxed/relaxed; d={key.domain}; s={key.selector};"
            for key in self._keys
        ]

    def signatures(self, personal: bytes, canonical: bytes, date: datetime) -> bytes:
        """The DKIM-Signature fields to put before a message with the per-recipient header
        block `personal`, the shared one, and the body whose relaxed canonical form is
        `canonical` (`canonical_body`)."""
        fields = canonical_headers(personal)
        names = ":".join([*self._names, *(name for name, _ in fields), "from"])
        personal_canonical = b"".join(canonical for _, canonical in fields)
        body_hash = base64.b64encode(hashlib.sha256(canonical).digest()).decode()
        tail = f"t={int(date.timestamp())}; h={names}; bh={body_hash}; b="
        out = []
        for key, tags in zip(self._keys, self._tags, strict=True):
            value = f"{tags} {tail}"
            state = self._shared.copy()
            state.update(personal_canonical)
            state.update(b"dkim-signature:" + value.encode("ascii"))
            signature = base64.b64encode(key.sign_digest(state.digest())).decode("ascii")
            out.append(_field(tags, tail, signature))
        return "".join(out).encode("ascii")


def _field(tags: str, tail: str, signature: str) -> str:
    """The DKIM-Signature field, folded only where its value has "; " (so that unfolding
    gives back exactly the value that was hashed), b= in lines of B64_LINE characters."""
    lines = ["DKIM-Signature:"]
    for tag in f"{tags} {tail}".removesuffix(" b=").split("; "):
        tag = tag.rstrip(";") + ";"
        if len(lines[-1]) + 1 + len(tag) > 78 and lines[-1] != "DKIM-Signature:":
            lines.append(f" {tag}")
        else:
            lines[-1] += f" {tag}"
    chunks = [signature[i : i + B64_LINE] for i in range(0, len(signature), B64_LINE)]
    lines.append(f" b={chunks[0]}")
    lines += (f" {chunk}" for chunk in chunks[1:])
    return "\r\n".join(lines) + "\r\n"
