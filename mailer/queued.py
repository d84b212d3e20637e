"""Queued messages (confirmations, welcomes, reminders, broadcasts): who may get them, and when.

Each is a ledger row waiting to go out. Confirmations and welcomes go at once;
reminders and broadcasts only inside the subscriber's send window. A row whose
subscriber may no longer have it (they left, or the course moved on) is
cancelled instead of sent.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from mailer import ledger
from mailer.attempt import Attempt, Pacer, SendReport, deliver
from mailer.compose import Composer
from mailer.course import Course
from mailer.models import Broadcast, Delivery, DeliveryStatus
from mailer.timing import SendWindow
from mailer.transport import Transport
from subscribers.models import Status, Subscriber

WINDOWED = ("reminder-", "broadcast-")  # sent only inside the subscriber's send window
LIFETIME = {"confirm": timedelta(days=2), "welcome": timedelta(days=2)}
DEFAULT_LIFETIME = timedelta(days=6)  # reminders and broadcasts
# Who may receive a broadcast when it goes out (the segment chose them when it was queued).
BROADCAST_AUDIENCE = (Status.ACTIVE, Status.PAUSED, Status.COMPLETED)


def ready(now: datetime) -> Any:
    """Queued or deferred ledger rows (not lessons) whose time has come."""
    return and_(
        Delivery.status.in_((DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED)),
        ~Delivery.key.like("lesson-%"),
        or_(
            Delivery.next_attempt_at <= now,
            and_(Delivery.next_attempt_at.is_(None), Delivery.due_at <= now),
        ),
    )


def send_queued(
    session: Session,
    transport: Transport,
    composer: Composer,
    window: SendWindow,
    now: datetime,
    report: SendReport,
    pacer: Pacer,
    *,
    stop: Callable[[], bool] | None = None,
    progress: Callable[[int], None] | None = None,
) -> bool:
    """Send every ready queued message; False when `stop` ended the loop early."""
    rows = session.execute(
        select(Delivery.id, Delivery.key, Delivery.subscriber_id, Subscriber.timezone)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(ready(now))
        .order_by(Delivery.id)
    ).all()
    session.commit()
    for row in rows:
        if stop and stop():
            return False
        if progress:
            progress(1)
        if row.key.startswith(WINDOWED):
            zone = ZoneInfo(row.timezone)
            if not window.is_open(now, zone):
                _wait_for_window(session, row.id, window.next_opening(now, zone), now)
                report.waiting += 1
                continue
        if report.dry_run:
            sub = session.get(Subscriber, row.subscriber_id)
            course = composer.renderer.course
            if sub is not None and refusal(row.key, sub, course, now) is None:
                report.sent += 1
            continue
        pacer.wait()
        deliver_queued(session, transport, composer, row.id, now, report)
    return True


def deliver_queued(
    session: Session,
    transport: Transport,
    composer: Composer,
    delivery_id: int,
    now: datetime,
    report: SendReport,
) -> None:
    """Claim one queued row and send it, or cancel it if its subscriber may no longer have it."""
    claim = ledger.claim_row(session, delivery_id, now)
    if claim is None:
        report.busy += 1
        return
    row = session.execute(
        select(Delivery.key, Delivery.message_id, Subscriber)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.id == delivery_id)
    ).one()
    sub: Subscriber = row.Subscriber
    refused = refusal(row.key, sub, composer.renderer.course, now)
    if refused:
        ledger.cancel(session, claim, now, f"not sent: {refused}")
        session.commit()
        return
    try:
        _prepare(session, composer, row.key)
        message = composer.compose(
            row.key,
            subscriber_id=sub.id,
            email=sub.email,
            name=sub.name,
            date=now,
            message_id=row.message_id,
        )
    except Exception:
        ledger.release(session, claim, now, "could not be rendered")
        session.commit()
        raise
    lifetime = LIFETIME.get(row.key, DEFAULT_LIFETIME)
    deliver(
        session, transport, Attempt(claim, sub.id, message, claim.due_at + lifetime), now, report
    )


def refusal(key: str, sub: Subscriber, course: Course, now: datetime) -> str | None:
    """Why `sub` may not receive `key` now (None: they may)."""
    kind, _, number = key.partition("-")
    if key == "confirm":
        return None if sub.status == Status.PENDING else f"the subscriber is {sub.status}"
    if key == "welcome":
        return None if sub.status == Status.ACTIVE else f"the subscriber is {sub.status}"
    if kind == "broadcast":
        ok = sub.status in BROADCAST_AUDIENCE
        return None if ok else f"the subscriber is {sub.status}"
    if kind == "reminder" and number.isdigit():
        week = int(number)
        last = week == course.total
        if not (course.reminders and sub.reminders):
            return "reminders are switched off"
        if sub.status == Status.COMPLETED and last:
            return None
        if sub.status != Status.ACTIVE:
            return f"the subscriber is {sub.status}"
        if sub.next_lesson != week + 1:
            return "the next lesson has already gone out"
        if sub.next_due_at is not None and sub.next_due_at <= now:
            return "the next lesson is due: a nudge for the last one would come too late"
        return None
    return f"no such message {key!r}"


def queue_reminder(
    session: Session,
    composer: Composer,
    sub: Any,
    week: int,
    sent_at: datetime,
    window: SendWindow,
    zone: ZoneInfo,
) -> None:
    """After lesson `week` went out, queue its mid-week nudge (when there is one); no commit."""
    course = composer.renderer.course
    lesson = course.lesson(week)
    if not (course.reminders and lesson.reminder and sub.reminders):
        return
    local_day = sent_at.astimezone(zone).date() + timedelta(days=course.reminder_after_days)
    key = lesson.reminder_key
    message_id = composer.message_id(sub.id, key, sub.course_round)
    ledger.enqueue(session, sub.id, key, message_id, window.opens_on(local_day, zone), sent_at)


def _prepare(session: Session, composer: Composer, key: str) -> None:
    """Load a broadcast's text the first time this run meets it."""
    if key.startswith("broadcast-") and key not in composer.renderer.rendered:
        broadcast = session.get(Broadcast, int(key.removeprefix("broadcast-")))
        if broadcast is None:
            raise LookupError(f"{key} no longer exists")
        composer.renderer.broadcast(key, broadcast.subject, broadcast.body)


def _wait_for_window(session: Session, delivery_id: int, opening: datetime, now: datetime) -> None:
    """Outside the send window: look at the row again when the window opens."""
    session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.status.in_((DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED)),
        )
        .values(next_attempt_at=opening, updated_at=now)
    )
    session.commit()
