"""Queued messages (confirmations, welcomes, reminders, broadcasts): who may get them, and when.

Each is a ledger row waiting to go out. Confirmations and welcomes go at once;
reminders and broadcasts only inside the subscriber's send window. A row whose
subscriber may no longer have it (they left, or the course moved on) is
cancelled instead of sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from mailer import claims, ledger
from mailer.attempt import Attempt, Sending
from mailer.models import Broadcast, Delivery, DeliveryStatus
from mailer.outcomes import FollowUp
from subscribers.models import Status, Subscriber

if TYPE_CHECKING:
    from mailer.compose import Composer
    from mailer.course import Course
    from mailer.timing import SendWindow

BATCH = 50
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


def send_queued(run: Sending) -> bool:
    """Send every ready queued message, claimed in batches by id; False when told to stop."""
    after: int | None = None
    ready_now = ready(run.now)
    while True:
        rows = claims.ready_queued(
            run.session, ready_now, after, BATCH, lock=not run.report.dry_run
        )
        if not rows:
            run.session.commit()
            return True
        after = rows[-1].id
        if not _queued_batch(run, rows, ready_now):
            return False


def _queued_batch(run: Sending, rows: Sequence[Any], ready_now: Any) -> bool:
    session, now = run.session, run.now
    wanted = []
    for row in rows:
        if row.key.startswith(WINDOWED):
            zone = ZoneInfo(row.timezone)
            if not run.window.is_open(now, zone):
                _wait_for_window(session, row.id, run.window.next_opening(now, zone), now)
                run.step()
                run.report.waiting += 1
                continue
        wanted.append(row)
    if run.report.dry_run:
        session.commit()
        course = run.composer.renderer.course
        for row in wanted:
            run.step()
            sub = session.get(Subscriber, row.subscriber_id)
            if sub is not None and refusal(row.key, sub, course, now) is None:
                run.report.count_sent(row.key)
        return True
    batch = claims.new_batch(run.owner, run.lease, exclusive=run.exclusive)
    got = claims.claim_rows(session, batch, [row.id for row in wanted], ready_now, now)
    try:
        for row in wanted:
            if run.stopping():
                run.outlet.drain()
                return False
            run.step()
            claim = got.get(row.id)
            if claim is None:
                run.report.busy += 1  # another run took it between the read and the claim
                continue
            attempt = prepare(session, run.composer, claim, now)
            if attempt is None:
                batch.done(claim.delivery_id)
                continue
            run.pacer.wait()
            if not run.outlet.submit(
                attempt, _spent(batch, claim.delivery_id), _held(session, batch, claim.delivery_id)
            ):
                run.outlet.drain()
                return False
        run.outlet.drain()
    except DBAPIError:
        session.rollback()  # a failed statement aborts the transaction: start afresh
        raise
    finally:
        run.outlet.settle()
        batch.release_rest(session, now, "not sent: the run stopped first")
    return True


def _spent(batch: claims.Batch, delivery_id: int) -> Callable[[], None]:
    return lambda: batch.done(delivery_id)


def _held(session: Session, batch: claims.Batch, delivery_id: int) -> Callable[[], float | None]:
    return lambda: batch.hold(session, delivery_id)


def prepare(
    session: Session, composer: Composer, claim: ledger.Claim, now: datetime
) -> Attempt | None:
    """The message of a claimed queued row, or None (cancelled: its subscriber may not have it)."""
    row = session.execute(
        select(Delivery.key, Delivery.message_id, Subscriber)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.id == claim.delivery_id)
    ).one()
    sub: Subscriber = row.Subscriber
    refused = refusal(row.key, sub, composer.renderer.course, now)
    if refused:
        ledger.cancel(session, claim, now, f"not sent: {refused}")
        session.commit()
        return None
    try:
        _prepare(session, composer, row.key)
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
        ledger.release(session, claim, now, "could not be rendered")
        session.commit()
        raise
    lifetime = LIFETIME.get(row.key, DEFAULT_LIFETIME)
    return Attempt(claim, sub.id, message, claim.due_at + lifetime)


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
    message_id = composer.message_id(sub.id, key, sub.course_round)
    return FollowUp(sub.id, key, message_id, window.opens_on(local_day, zone))


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
