"""Proof that an inbound report concerns a message we sent: VERP addresses, signed Message-IDs.

Anyone can send a delivery report naming any address. A report changes a
subscriber only when it carries something only a message of ours to that
subscriber carried: the VERP envelope sender it was returned to, or our
signed Message-ID quoted in its returned headers (README: "Bounces and
complaints").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage, Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.content.message import Sender
from mailer.tokens import Tokens
from subscribers.models import Subscriber

RETURNED_PARTS = ("text/rfc822-headers", "message/rfc822", "message/global-headers")
MAX_PARTS = 200  # parts looked at in one report
MAX_QUOTED = 8  # returned messages (or header blocks) read from one report
MAX_CANDIDATES = 20  # subscribers a quoted Message-ID is checked against
# Headers an MTA adds with the envelope recipient when it delivers into a mailbox
# (what `inbound --imap` has instead of `--recipient`).
DELIVERY_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To")


@dataclass(frozen=True)
class Proof:
    """A subscriber a report proves we mailed, and how."""

    subscriber_id: int
    evidence: str  # "VERP address" or "signed Message-ID"


def prove(
    session: Session,
    tokens: Tokens,
    sender: Sender,
    message: EmailMessage,
    *,
    envelope: Iterable[str] = (),
    named: Iterable[str] = (),
) -> dict[int, Proof]:
    """The subscribers `message` proves were sent a message of ours, by id.

    `envelope` are the envelope recipients the MTA gave (`--recipient`);
    `named` are the addresses the report says failed, tried with the quoted
    Message-IDs alongside the quoted `To`.
    """
    found: dict[int, Proof] = {}
    addresses = [*envelope, *_delivery_addresses(message)]
    for token in verp_tokens(addresses, sender.bounce_address or sender.address):
        named_by = tokens.read_verp(token)
        if named_by is not None:
            found.setdefault(named_by[0], Proof(named_by[0], "VERP address"))
    quoted = list(_quoted_headers(message))
    ids = {mid for headers in quoted for mid in _message_ids(headers)}
    if ids:
        candidates = {a.lower() for a in named}
        for headers in quoted:
            candidates.update(a.lower() for _, a in getaddresses(headers.get_all("To", [])) if a)
        for sub_id in _subscribers(session, sorted(candidates)[:MAX_CANDIDATES]):
            if any(tokens.is_message_id_of(sub_id, mid, sender.domain) for mid in ids):
                found.setdefault(sub_id, Proof(sub_id, "signed Message-ID"))
    return found


def verp_tokens(addresses: Iterable[str], bounce_address: str) -> Iterator[str]:
    """The tokens in those of `addresses` that are `bounce_address` with +token added."""
    local, _, domain = bounce_address.lower().rpartition("@")
    prefix = f"{local}+"
    for address in addresses:
        text = address.strip().strip("<>").lower()
        at_local, _, at_domain = text.rpartition("@")
        if at_domain == domain and at_local.startswith(prefix):
            yield at_local.removeprefix(prefix)


def _delivery_addresses(message: Message) -> list[str]:
    values = [str(v) for h in DELIVERY_HEADERS for v in message.get_all(h, [])]
    return [a for _, a in getaddresses(values) if a]


def _quoted_headers(message: Message) -> Iterator[Message]:
    """The header blocks of the messages a report returns (bounded)."""
    quoted = 0
    for seen, part in enumerate(message.walk()):
        if seen >= MAX_PARTS or quoted >= MAX_QUOTED:
            return
        kind = part.get_content_type()
        if kind not in RETURNED_PARTS:
            continue
        quoted += 1
        if kind == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                yield inner[0]
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            text = payload[:65536].decode("utf-8", "replace")
            yield HeaderParser(policy=compat32).parsestr(text, headersonly=True)


def _message_ids(headers: Message) -> list[str]:
    return [str(v).strip() for v in headers.get_all("Message-ID", [])[:4]]


def _subscribers(session: Session, addresses: list[str]) -> list[int]:
    if not addresses:
        return []
    rows = session.scalars(select(Subscriber.id).where(func.lower(Subscriber.email).in_(addresses)))
    return list(rows)
