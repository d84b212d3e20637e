"""Deliveries that went wrong: list them with the server's last reply, and retry them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import keys
from mailer.app.enrolment import earliest_next_lesson
from mailer.keys import Kind, MessageKey
from mailer.ledger import queue
from mailer.reports.summary import iso
from mailer.store.models import Delivery, DeliveryStatus
from mailer.timing import Windows, resumed_due
from subscribers.models import Status, Subscriber


def list_deliveries(
    session: Session, *, status: str | None = None, key: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Deliveries (of one status and key, if given), newest first, with the last reply."""
    query = (
        select(Delivery, Subscriber.email, Subscriber.status)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .order_by(Delivery.updated_at.desc(), Delivery.id.desc())
        .limit(limit)
    )
    if status:
        query = query.where(Delivery.status == status)
    if key:
        query = query.where(Delivery.key == key)
    return [
        {
            "email": email,
            "subscriber_status": sub_status,
            "key": d.key,
            "status": d.status,
            "attempts": d.attempts,
            "updated_at": iso(d.updated_at),
            "sent_at": iso(d.sent_at),
            "last_reply": d.last_error,
            "message_id": d.message_id,
        }
        for d, email, sub_status in session.execute(query)
    ]


@dataclass
class Retry:
    """What `send --retry-failed` put back in the queue, and what it left alone."""

    requeued: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def retry_failed(session: Session, now: datetime, windows: Windows) -> Retry:
    """Put permanently failed deliveries back in the queue; commits.

    Bounced, unsubscribed, complained and erased subscribers are left alone. A failed lesson
    goes out again only if it is the subscriber's latest: their course steps
    back to it, at the next window (never sooner than a week after the last
    lesson sent). Other messages are queued to go out now.
    """
    result = Retry()
    rows = session.execute(
        select(Delivery, Subscriber)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.status == DeliveryStatus.FAILED)
        .order_by(Delivery.id)
    ).all()
    for delivery, sub in rows:
        label = f"{sub.email} {delivery.key}"
        if sub.status in (Status.BOUNCED, Status.UNSUBSCRIBED, Status.COMPLAINED):
            result.skipped.append(f"{label} (the subscriber is {sub.status})")
            continue
        key = MessageKey.parse(delivery.key)
        if key.round is not None:  # archived by restart or jump
            result.skipped.append(f"{label} (from an earlier round of the course)")
            continue
        if key.kind == Kind.LESSON and not _rewind(session, sub, key, now, windows):
            result.skipped.append(f"{label} (the course has moved on past it)")
            continue
        note = f"retry requested after: {delivery.last_error or 'a failure'}"
        queue.requeue(session, delivery.id, now, note)
        result.requeued.append(label)
    session.commit()
    return result


def _rewind(
    session: Session, sub: Subscriber, lesson: MessageKey, now: datetime, windows: Windows
) -> bool:
    week = lesson.week or 1
    if sub.status not in (Status.ACTIVE, Status.PAUSED, Status.COMPLETED):
        return False
    following = session.scalar(
        select(Delivery.status).where(
            Delivery.subscriber_id == sub.id, Delivery.key == keys.lesson(week + 1)
        )
    )
    on_it = sub.next_lesson in (week + 1, None) and following is None
    if not on_it:
        return False
    zone, window = ZoneInfo(sub.timezone), windows.of(sub.time_of_day)
    earliest = earliest_next_lesson(session, sub, window)
    sub.next_lesson = week
    sub.next_due_at = resumed_due(earliest, now, window, zone)
    if sub.status == Status.COMPLETED:
        sub.status = Status.ACTIVE
        sub.status_changed_at = now
    return True
