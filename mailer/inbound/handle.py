"""Carrying out what mail to the list asks for: sign-ups, unsubscribes, proven bounces
and complaints.

A bounce or feedback report changes a subscriber only when it proves it
concerns a message we sent them (mailer.inbound.provenance; README, "Bounces
and complaints" and "Complaints").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.app import history, signup
from mailer.app.enrolment import complain, leave
from mailer.app.signup import MessageIds
from mailer.inbound import provenance
from mailer.inbound.classify import Action, Request, classify
from mailer.inbound.provenance import Proof
from subscribers.errors import InvalidInput
from subscribers.models import Status, Subscriber
from subscribers.validation import clean_name

if TYPE_CHECKING:
    from mailer.content.compose import Composer

log = logging.getLogger("rekindle.inbound")
SHOWN = 5  # addresses named in one log line
# A bounce report never changes someone who already left (or complained: that must stay).
BOUNCE_KEEPS = (Status.UNSUBSCRIBED, Status.BOUNCED, Status.COMPLAINED)
# Unsubscribing changes nobody who already gets nothing; a complaint must stay on record.
LEFT = (Status.UNSUBSCRIBED, Status.COMPLAINED)


@dataclass(frozen=True)
class Outcome:
    """What handling one inbound message changed; `confirmation` is a queued ledger row."""

    request: Request
    changed: tuple[str, ...] = ()
    confirmation: int | None = None

    def summary(self) -> str:
        """One log line (a report naming a thousand addresses names the first few)."""
        who = _some(self.request.addresses) or "-"
        done = f"; changed {_some(self.changed)}" if self.changed else "; nothing to change"
        return f"{self.request.action}: {who} ({self.request.reason}){done}"


def _some(addresses: tuple[str, ...]) -> str:
    shown = ", ".join(addresses[:SHOWN])
    more = len(addresses) - SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def handle(
    session: Session,
    message: EmailMessage,
    *,
    composer: Composer,
    unsubscribe_address: str | None,
    recipients: Iterable[str],
    timezone: str,
    now: datetime,
) -> Outcome:
    """Classify one parsed message, check a bounce report's proof, and carry it out; commits."""
    sender = composer.sender
    request = classify(
        message,
        unsubscribe_address=unsubscribe_address,
        own_addresses=[sender.address, sender.envelope(None)],
        recipients=recipients,
    )
    proofs = None
    if request.action in (Action.BOUNCE, Action.COMPLAINT):
        proofs = provenance.prove(
            session,
            composer.tokens,
            sender,
            message,
            envelope=recipients,
            named=request.addresses,
            complaint=request.action == Action.COMPLAINT,
            senders=request.senders,
        )
    return apply(
        session,
        request,
        timezone=timezone,
        now=now,
        message_id=composer.message_id,
        proofs=proofs,
    )


def apply(
    session: Session,
    request: Request,
    *,
    timezone: str,
    now: datetime,
    message_id: MessageIds,
    proofs: Mapping[int, Proof] | None = None,
) -> Outcome:
    """Carry out a classified request on the subscriber store; commits.

    A bounce or complaint changes only the subscribers in `proofs`
    (mailer.inbound.provenance.prove): a report that proves nothing changes nothing.
    """
    if request.action == Action.SUBSCRIBE:
        try:
            result = signup.request_subscription(
                session,
                request.addresses[0],
                name=_usable_name(request.name),
                timezone=timezone,
                now=now,
                source="email",
                message_id=message_id,
            )
        except InvalidInput as exc:
            return Outcome(Request(Action.IGNORE, request.addresses, reason=str(exc)))
        if result.refused:  # one log line: the summary says why nothing was sent
            return Outcome(replace(request, reason=f"nothing sent: {result.refused}"))
        asked = request.addresses if result.confirmation else ()
        return Outcome(request, asked, result.confirmation)
    if request.action == Action.UNSUBSCRIBE:
        changed: list[str] = []
        for address in request.addresses:
            sub = session.scalar(
                select(Subscriber).where(func.lower(Subscriber.email) == address.lower())
            )
            if sub is not None and sub.status not in LEFT:
                was = sub.status
                leave(session, sub, now)
                history.record(session, sub, history.EMAIL, "unsubscribe", f"left (was {was})", now)
                changed.append(sub.email)
        session.commit()
        return Outcome(request, tuple(changed))
    if request.action == Action.BOUNCE:
        return _bounce_proved(session, request, proofs or {}, now)
    if request.action == Action.COMPLAINT:
        return _complaint_proved(session, request, proofs or {}, now)
    return Outcome(request)


def _usable_name(name: str | None) -> str | None:
    """A From display name we may store, else None: a mail client's odd display name
    (control or formatting characters) must not cost the person their sign-up."""
    try:
        return clean_name(name)
    except InvalidInput:
        return None


def _bounce_proved(
    session: Session, request: Request, proofs: Mapping[int, Proof], now: datetime
) -> Outcome:
    """Bounce the subscribers the report proves we mailed; nobody else."""

    def bounce(sub: Subscriber, how: str) -> bool:
        if sub.status in BOUNCE_KEEPS:
            return False
        sub.status = Status.BOUNCED
        sub.status_changed_at = now
        sub.next_due_at = None
        return True

    unproved = "a delivery report that proves no message of ours"
    return _proved(session, request, proofs, Action.BOUNCE, unproved, bounce)


def _complaint_proved(
    session: Session, request: Request, proofs: Mapping[int, Proof], now: datetime
) -> Outcome:
    """Mark the subscribers the report proves we mailed `complained`: no more mail of any
    kind, from whatever status (an unsubscribed reader's complaint is recorded too)."""

    def mark(sub: Subscriber, how: str) -> bool:
        if sub.status == Status.COMPLAINED:
            return False
        was = sub.status
        complain(session, sub, now)
        detail = f"marked our mail as spam: {request.reason}, proved by {how} (was {was})"
        history.record(session, sub, history.FEEDBACK_LOOP, history.COMPLAINT, detail, now)
        return True

    unproved = f"{request.reason} that proves no message of ours"
    return _proved(session, request, proofs, Action.COMPLAINT, unproved, mark)


def _proved(
    session: Session,
    request: Request,
    proofs: Mapping[int, Proof],
    action: Action,
    unproved: str,
    change: Callable[[Subscriber, str], bool],
) -> Outcome:
    """Apply `change` to each subscriber a report proves we mailed (True: it changed them);
    a report that proves nothing changes nobody (README, "Bounces and complaints")."""
    if not proofs:
        reason = f"{unproved} (no VERP address or signed Message-ID): nobody changed"
        return Outcome(Request(Action.IGNORE, request.addresses, reason=reason))
    how = " and ".join(sorted({p.evidence for p in proofs.values()}))
    changed: list[str] = []
    proved: list[str] = []
    for sub_id in sorted(proofs):
        sub = session.get(Subscriber, sub_id)
        if sub is None:
            continue
        proved.append(sub.email)
        if change(sub, how):
            changed.append(sub.email)
    session.commit()
    reason = f"{request.reason}, proved by {how}"
    return Outcome(Request(action, tuple(proved), reason=reason), tuple(changed))
