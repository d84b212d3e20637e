"""Broadcast newsletters: write one, queue it for a segment, and see how far it has got."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer.content.compose import Composer
from mailer.errors import Conflict, InvalidInput, NotFound
from mailer.reports.summary import iso
from mailer.store.models import Broadcast, Delivery, DeliveryStatus
from subscribers.models import Status, Subscriber

SEGMENTS = {
    "active": (Status.ACTIVE,),
    "completed": (Status.COMPLETED,),
    "all": (Status.ACTIVE, Status.PAUSED, Status.COMPLETED),
}
BATCH = 1000
_LINE_BREAK = re.compile(r"[\r\n\x00]")


def key_of(broadcast_id: int) -> str:
    """The ledger key of a broadcast."""
    return f"broadcast-{broadcast_id}"


def create(session: Session, subject: str, body: str, segment: str, now: datetime) -> Broadcast:
    """Store a new broadcast (not yet queued); commits."""
    subject = subject.strip()
    if not subject or _LINE_BREAK.search(subject) or len(subject) > 200:
        raise InvalidInput("the subject must be one line of 1 to 200 characters")
    if not body.strip():
        raise InvalidInput("the body is empty")
    if segment not in SEGMENTS:
        raise InvalidInput(f"unknown segment {segment!r}: use {', '.join(SEGMENTS)}")
    broadcast = Broadcast(subject=subject, body=body, segment=segment, created_at=now, recipients=0)
    session.add(broadcast)
    session.commit()
    return broadcast


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
    """One queued ledger row per subscriber in the segment, inserted in batches."""
    query = (
        select(Subscriber.id)
        .where(Subscriber.status.in_(SEGMENTS[broadcast.segment]))
        .order_by(Subscriber.id)
    )
    total = 0
    batch: list[dict[str, Any]] = []
    for subscriber_id in session.scalars(query).all():
        batch.append(
            {
                "subscriber_id": subscriber_id,
                "key": key,
                "status": DeliveryStatus.QUEUED,
                "message_id": composer.message_id(subscriber_id, key),
                "due_at": send_at,
                "attempts": 0,
                "updated_at": now,
            }
        )
        if len(batch) >= BATCH:
            session.execute(insert(Delivery), batch)
            total += len(batch)
            batch = []
    if batch:
        session.execute(insert(Delivery), batch)
        total += len(batch)
    return total


def overview(session: Session) -> list[dict[str, Any]]:
    """Every broadcast with its delivery figures, newest first."""
    counts: dict[str, dict[str, int]] = {}
    for key, status, count in session.execute(
        select(Delivery.key, Delivery.status, func.count())
        .where(Delivery.key.like("broadcast-%"))
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
