"""Queued messages as a source of due mail: confirmations, welcomes, reminders, broadcasts.

Each is a ledger row waiting to go out. Confirmations and welcomes go at once;
reminders and broadcasts only inside the subscriber's send window (the key's
kind says which, mailer.keys). `refusal` is the one place that decides
whether a subscriber may still have a queued message; a row they may not have
is cancelled instead of sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.keys import Kind, MessageKey
from mailer.ledger import claims, queue, settle
from mailer.ledger.batch import Batch
from mailer.ledger.record import FollowUp
from mailer.ledger.rules import Claim
from mailer.send.attempt import Attempt
from mailer.send.batches import held, spent
from mailer.send.context import Sending
from mailer.store.models import Broadcast, Delivery
from subscribers.models import Status, Subscriber

if TYPE_CHECKING:
    from mailer.content.compose import Composer
    from mailer.content.course import Course
    from mailer.timing import SendWindow

# Who may receive a broadcast when it goes out (the segment chose them when it was queued).
BROADCAST_AUDIENCE = (Status.ACTIVE, Status.PAUSED, Status.COMPLETED)


class Notices:
    """The batch loop's source of queued messages, by ledger id (mailer.send.batches)."""

    def fetch(self, run: Sending, after: Any, limit: int) -> Sequence[Any]:
        return claims.ready_notices(run.session, run.now, after, limit, lock=not run.report.dry_run)

    def cursor(self, row: Any) -> int:
        return int(row.id)

    def wanted(self, run: Sending, rows: Sequence[Any]) -> list[Any]:
        session, now, windows = run.session, run.now, run.policy.windows
        found = []
        for row in rows:
            if MessageKey.parse(row.key).windowed:
                zone, window = ZoneInfo(row.timezone), windows.of(row.time_of_day)
                if not window.is_open(now, zone):
                    queue.wait_for_window(session, row.id, window.next_opening(now, zone), now)
                    run.step()
                    run.report.waiting += 1
                    continue
            found.append(row)
        return found

    def predict(self, run: Sending, items: list[Any]) -> None:
        course = run.composer.renderer.course
        for row in items:
            run.step()
            sub = run.session.get(Subscriber, row.subscriber_id)
            if sub is not None and refusal(row.key, sub, course, run.now) is None:
                run.report.count_sent(row.key)

    def claim(self, run: Sending, batch: Batch, items: list[Any]) -> dict[int, Any]:
        return claims.claim_notices(run.session, batch, [row.id for row in items], run.now)

    def submit(self, run: Sending, batch: Batch, item: Any, got: dict[int, Any]) -> bool:
        claim = got.get(item.id)
        if claim is None:
            run.report.busy += 1  # another run took it between the read and the claim
            return True
        attempt = prepare(run.session, run.composer, claim, run.now)
        if attempt is None:
            batch.done(claim.delivery_id)
            return True
        run.pacer.wait()
        return run.outlet.submit(
            attempt, spent(batch, claim.delivery_id), held(run, batch, claim.delivery_id)
        )


def prepare(session: Session, composer: Composer, claim: Claim, now: datetime) -> Attempt | None:
    """The message of a claimed queued row, or None (cancelled: its subscriber may not have it)."""
    row = session.execute(
        select(Delivery.key, Delivery.message_id, Subscriber)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.id == claim.delivery_id)
    ).one()
    sub: Subscriber = row.Subscriber
    refused = refusal(row.key, sub, composer.renderer.course, now)
    if refused:
        settle.cancel(session, claim, now, f"not sent: {refused}")
        session.commit()
        return None
    try:
        _load_broadcast(session, composer, row.key)
        message = composer.compose(
            row.key,
            subscriber_id=sub.id,
            email=sub.email,
            name=sub.name,
            date=now,
            message_id=row.message_id,
            first_lesson_due=sub.next_due_at if sub.next_lesson == 1 else None,
            timezone=sub.timezone,
        )
    except Exception:
        settle.release(session, claim, now, "could not be rendered")
        session.commit()
        raise
    return Attempt(claim, sub.id, message, claim.due_at + MessageKey.parse(row.key).lifetime)


class Reader(Protocol):
    """What decides whether a subscriber may still have a queued message."""

    @property
    def status(self) -> str: ...
    @property
    def reminders(self) -> bool: ...
    @property
    def next_lesson(self) -> int | None: ...
    @property
    def next_due_at(self) -> datetime | None: ...


def refusal(key: str, sub: Reader, course: Course, now: datetime) -> str | None:
    """Why `sub` may not receive `key` now (None: they may); `status` forecasts with it too."""
    found = MessageKey.read(key)
    kind = found.kind if found is not None and found.round is None else None
    if kind == Kind.CONFIRM:
        return None if sub.status == Status.PENDING else f"the subscriber is {sub.status}"
    if kind == Kind.WELCOME:
        return None if sub.status == Status.ACTIVE else f"the subscriber is {sub.status}"
    if kind == Kind.BROADCAST:
        ok = sub.status in BROADCAST_AUDIENCE
        return None if ok else f"the subscriber is {sub.status}"
    if kind == Kind.REMINDER and found is not None and found.week is not None:
        week = found.week
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


def reminder_for(
    composer: Composer,
    sub: Any,
    week: int,
    sent_at: datetime,
    window: SendWindow,
    zone: ZoneInfo,
) -> FollowUp | None:
    """Lesson `week`'s mid-week nudge, to queue once the lesson is sent (None: there is none)."""
    course = composer.renderer.course
    lesson = course.lesson(week)
    if not (course.reminders and lesson.reminder and sub.reminders):
        return None
    local_day = sent_at.astimezone(zone).date() + timedelta(days=course.reminder_after_days)
    key = lesson.reminder_key
    message_id = composer.message_id(sub.id, sub.email, key, sub.course_round)
    return FollowUp(sub.id, key, message_id, window.opens_on(local_day, zone))


def _load_broadcast(session: Session, composer: Composer, key: str) -> None:
    """Load a broadcast's text the first time this run meets it."""
    found = MessageKey.parse(key)
    if found.kind == Kind.BROADCAST and key not in composer.renderer.rendered:
        broadcast = session.get(Broadcast, found.number)
        if broadcast is None:
            raise LookupError(f"{key} no longer exists")
        composer.renderer.broadcast(key, broadcast.subject, broadcast.body)
