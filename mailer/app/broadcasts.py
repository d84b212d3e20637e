"""Broadcast newsletters: write one, queue it for a segment, and see how far it has got."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer import keys
from mailer.config import Settings
from mailer.content.checks import sample_message
from mailer.content.compose import Composer
from mailer.content.render import Renderer
from mailer.errors import Conflict, InvalidInput, NotFound
from mailer.keys import Kind
from mailer.ledger import queue as ledger_queue
from mailer.reports.summary import iso
from mailer.store.models import Broadcast, Delivery, DeliveryStatus
from subscribers.models import Status, Subscriber

SEGMENTS = {
    "active": (Status.ACTIVE,),
    "completed": (Status.COMPLETED,),
    "all": (Status.ACTIVE, Status.PAUSED, Status.COMPLETED),
}
_LINE_BREAK = re.compile(r"[\r\n\x00]")
DRAFT = "broadcast draft"  # the renderer's name for a body checked before it has an id


def key_of(broadcast_id: int) -> str:
    """The ledger key of a broadcast."""
    return keys.broadcast(broadcast_id)


def create(
    session: Session, renderer: Renderer, subject: str, body: str, segment: str, now: datetime
) -> Broadcast:
    """Store a new broadcast (not yet queued) once its body renders; commits."""
    subject = subject.strip()
    if not subject or _LINE_BREAK.search(subject) or len(subject) > 200:
        raise InvalidInput("the subject must be one line of 1 to 200 characters")
    if not body.strip():
        raise InvalidInput("the body is empty")
    if segment not in SEGMENTS:
        raise InvalidInput(f"unknown segment {segment!r}: use {', '.join(SEGMENTS)}")
    renderer.draft(DRAFT, subject, body)  # a broken or hostile body stops here
    broadcast = Broadcast(subject=subject, body=body, segment=segment, created_at=now, recipients=0)
    session.add(broadcast)
    session.commit()
    return broadcast


def preview(
    session: Session, renderer: Renderer, settings: Settings, broadcast_id: int
) -> tuple[str, str]:
    """Broadcast `broadcast_id` as a sample subscriber sees it: (text part, HTML part)."""
    broadcast = get(session, broadcast_id)
    key = key_of(broadcast.id)
    renderer.broadcast(key, broadcast.subject, broadcast.body)
    return sample_message(renderer, settings, key)


def get(session: Session, broadcast_id: int) -> Broadcast:
    """The broadcast with this id, or NotFound."""
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None:
        raise NotFound(f"no broadcast {broadcast_id}")
    return broadcast


def queue(
    session: Session, composer: Composer, broadcast_id: int, send_at: datetime, now: datetime
) -> Broadcast:
    """Queue the broadcast for everyone in its segment now; `send` delivers it from `send_at`,
    inside each subscriber's window. Each person gets it once (key broadcast-<id>); commits."""
    broadcast = get(session, broadcast_id)
    if broadcast.queued_at is not None:
        raise Conflict(
            f"broadcast {broadcast_id} was already queued on {iso(broadcast.queued_at)} "
            f"for {broadcast.recipients} subscribers"
        )
    key = key_of(broadcast_id)
    composer.renderer.broadcast(key, broadcast.subject, broadcast.body)  # renders before queueing
    try:
        total = _insert_rows(session, composer, broadcast, key, send_at, now)
        broadcast.queued_at = now
        broadcast.send_at = send_at
        broadcast.recipients = total
        session.commit()
    except IntegrityError:  # another `broadcast send` of the same id got there first
        session.rollback()
        raise Conflict(f"broadcast {broadcast_id} was already queued") from None
    return broadcast


def _insert_rows(
    session: Session,
    composer: Composer,
    broadcast: Broadcast,
    key: str,
    send_at: datetime,
    now: datetime,
) -> int:
    """One queued ledger row per subscriber in the segment."""
    query = (
        select(Subscriber.id, Subscriber.email)
        .where(Subscriber.status.in_(SEGMENTS[broadcast.segment]))
        .order_by(Subscriber.id)
    )
    recipients = (
        (subscriber_id, composer.message_id(subscriber_id, email, key))
        for subscriber_id, email in session.execute(query).all()
    )
    return ledger_queue.enqueue_many(session, key, recipients, send_at, now)


def overview(session: Session) -> list[dict[str, Any]]:
    """Every broadcast with its delivery figures, newest first."""
    counts: dict[str, dict[str, int]] = {}
    for key, status, count in session.execute(
        select(Delivery.key, Delivery.status, func.count())
        .where(keys.of_kind(Delivery.key, Kind.BROADCAST))
        .group_by(Delivery.key, Delivery.status)
    ):
        counts.setdefault(key, {})[status] = count
    rows = []
    for b in session.scalars(select(Broadcast).order_by(Broadcast.id.desc())):
        by_status = counts.get(key_of(b.id), {})
        rows.append(
            {
                "id": b.id,
                "subject": b.subject,
                "segment": b.segment,
                "created_at": iso(b.created_at),
                "queued_at": iso(b.queued_at),
                "send_at": iso(b.send_at),
                "recipients": b.recipients,
                "sent": by_status.get(DeliveryStatus.SENT, 0),
                "waiting": by_status.get(DeliveryStatus.QUEUED, 0)
                + by_status.get(DeliveryStatus.DEFERRED, 0)
                + by_status.get(DeliveryStatus.SENDING, 0),
                "failed": by_status.get(DeliveryStatus.FAILED, 0),
                "cancelled": by_status.get(DeliveryStatus.CANCELLED, 0),
            }
        )
    return rows
