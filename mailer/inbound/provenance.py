"""Proof that an inbound report concerns a message we sent: VERP addresses, signed Message-IDs.

Anyone can send a delivery report naming any address. A report changes a
subscriber only when it carries something only a message of ours to that
subscriber carried: the VERP envelope sender it was returned to, or our
signed Message-ID quoted in its returned headers (README: "Bounces and
complaints"). A complaint (a feedback report) may also prove it by quoting the
VERP envelope sender itself, as Original-Mail-From or as the quoted message's
Return-Path, and its quoted Message-ID is looked up in the ledger when the
provider blotted out the address (README, "Complaints").

Both tokens are HMACs over the subscriber id, the message key and the address
the message went to, so each is checked against the address the subscriber
named by the id has now: an erased subscriber's id given to a newcomer (SQLite
reuses the highest id) proves nothing about the newcomer.
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
from mailer.store.models import Delivery
from mailer.tokens import Tokens, VerpClaim
from subscribers.models import Subscriber

RETURNED_PARTS = ("text/rfc822-headers", "message/rfc822", "message/global-headers")
MAX_PARTS = 200  # parts looked at in one report
MAX_QUOTED = 8  # returned messages (or header blocks) read from one report
MAX_CANDIDATES = 20  # subscribers a quoted Message-ID is checked against
MAX_VERP = 20  # VERP tokens checked from one report
MAX_LOOKUPS = 8  # quoted Message-IDs of ours looked up in the ledger (complaints)
# Headers an MTA adds with the envelope recipient when it delivers into a mailbox
# (what `inbound --imap` has instead of `--recipient`).
DELIVERY_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To")


@dataclass(frozen=True)
class Proof:
    """A subscriber a report proves we mailed, and how."""

    subscriber_id: int
    evidence: str  # "VERP address", "signed Message-ID" or "quoted VERP envelope sender"


def prove(
    session: Session,
    tokens: Tokens,
    sender: Sender,
    message: EmailMessage,
    *,
    envelope: Iterable[str] = (),
    named: Iterable[str] = (),
    complaint: bool = False,
    senders: Iterable[str] = (),
) -> dict[int, Proof]:
    """The subscribers `message` proves were sent a message of ours, by id.

    `envelope` are the envelope recipients the MTA gave (`--recipient`);
    `named` are the addresses the report says failed, tried with the quoted
    Message-IDs alongside the quoted `To`. For a `complaint`, `senders` (its
    Original-Mail-From) and the quoted Return-Path are read as VERP addresses
    too, and the subscribers a quoted Message-ID of ours went to are found in
    the ledger (Yahoo and Microsoft may blot out the reader's address).
    """
    found: dict[int, Proof] = {}
    base = sender.bounce_address or sender.address
    quoted = list(_quoted_headers(message))
    claimed = [(t, "VERP address") for t in [*envelope, *_delivery_addresses(message)]]
    if complaint:
        returned = [*senders, *(a for h in quoted for a in _addresses(h, "Return-Path"))]
        claimed += [(t, "quoted VERP envelope sender") for t in returned]
    _verp(session, tokens, claimed, base, found)
    ids = {mid for headers in quoted for mid in _message_ids(headers)}
    if ids:
        candidates = {a.lower() for a in named}
        for headers in quoted:
            candidates.update(a.lower() for a in _addresses(headers, "To"))
        subscribers = _subscribers(session, sorted(candidates)[:MAX_CANDIDATES])
        if complaint:
            subscribers += _mailed(session, ids, sender.domain)
        for sub_id, email in subscribers:
            if any(tokens.is_message_id_of(sub_id, email, mid, sender.domain) for mid in ids):
                found.setdefault(sub_id, Proof(sub_id, "signed Message-ID"))
    return found


def _verp(
    session: Session,
    tokens: Tokens,
    addresses: list[tuple[str, str]],
    base: str,
    found: dict[int, Proof],
) -> None:
    """Add the subscribers the genuine VERP tokens among `addresses` name, each with the
    evidence its address stands for (the first one wins).

    A token is checked against the address of the subscriber its id names now (one query).
    """
    claims: dict[str, tuple[VerpClaim, str]] = {}
    for address, evidence in addresses:
        for token in verp_tokens([address], base):
            claim = tokens.read_verp(token)
            if claim is not None and token not in claims and len(claims) < MAX_VERP:
                claims[token] = (claim, evidence)
    if not claims:
        return
    wanted = {claim.subscriber_id for claim, _ in claims.values()}
    query = select(Subscriber.id, Subscriber.email).where(Subscriber.id.in_(wanted))
    emails = {sub_id: email for sub_id, email in session.execute(query)}
    for claim, evidence in claims.values():
        email = emails.get(claim.subscriber_id)
        if email is not None and tokens.is_verp_of(claim, email):
            found.setdefault(claim.subscriber_id, Proof(claim.subscriber_id, evidence))


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


def _addresses(headers: Message, name: str) -> list[str]:
    return [a for _, a in getaddresses([str(v) for v in headers.get_all(name, [])[:4]]) if a]


def _message_ids(headers: Message) -> list[str]:
    return [str(v).strip() for v in headers.get_all("Message-ID", [])[:4]]


def _subscribers(session: Session, addresses: list[str]) -> list[tuple[int, str]]:
    """(id, address) of the subscribers with one of `addresses`."""
    if not addresses:
        return []
    rows = session.execute(
        select(Subscriber.id, Subscriber.email).where(func.lower(Subscriber.email).in_(addresses))
    )
    return [(sub_id, email) for sub_id, email in rows]


def _mailed(session: Session, ids: Iterable[str], domain: str) -> list[tuple[int, str]]:
    """(id, address) of the subscribers the ledger says were sent a message with one of `ids`
    (only ids at our own domain are looked up; the caller still checks each one's signature,
    against the address the subscriber has now)."""
    suffix = f"@{domain.lower()}>"
    ours = sorted({m.lower() for m in ids if m.lower().endswith(suffix)})[:MAX_LOOKUPS]
    if not ours:
        return []
    rows = session.execute(
        select(Subscriber.id, Subscriber.email)
        .join(Delivery, Delivery.subscriber_id == Subscriber.id)
        .where(func.lower(Delivery.message_id).in_(ours))
        .distinct()
        .limit(MAX_CANDIDATES)
    )
    return [(sub_id, email) for sub_id, email in rows]
