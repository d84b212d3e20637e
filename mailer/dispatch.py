"""`send_due`: deliver every message that is due now, following SPEC §4 and §5.

Two kinds of work: queued ledger rows (confirmations and welcomes at once;
reminders and broadcasts inside the send window, see `queued`), and course
lessons, found from each subscriber's cursor (next lesson, next due time) and
sent only inside their local send window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.orm import Session

from mailer import ledger, queued
from mailer.attempt import Attempt, Pacer, SendReport, deliver
from mailer.compose import Composer
from mailer.errors import TransportUnavailable
from mailer.models import Delivery, DeliveryStatus
from mailer.timing import SendWindow, next_lesson_due
from mailer.transport import Transport
from subscribers.models import Status, Subscriber

__all__ = ["SendReport", "count_due", "deliver_now", "send_due"]

BATCH = 500


def due_subscribers(session: Session, now: datetime) -> Iterator[Any]:
    """Active subscribers whose next lesson is due, streamed in batches by due time."""
    columns = (
        Subscriber.id,
        Subscriber.email,
        Subscriber.name,
        Subscriber.timezone,
        Subscriber.next_lesson,
        Subscriber.next_due_at,
        Subscriber.course_round,
        Subscriber.reminders,
    )
    after: tuple[datetime, int] | None = None
    while True:
        query = (
            select(*columns)
            .where(Subscriber.status == Status.ACTIVE, Subscriber.next_due_at <= now)
            .order_by(Subscriber.next_due_at, Subscriber.id)
            .limit(BATCH)
        )
        if after is not None:
            query = query.where(tuple_(Subscriber.next_due_at, Subscriber.id) > after)
        rows = session.execute(query).all()
        session.commit()  # end the read transaction between batches
        yield from rows
        if len(rows) < BATCH:
            return
        after = (rows[-1].next_due_at, rows[-1].id)


def count_due(session: Session, now: datetime) -> int:
    """How many messages are due (for progress bars)."""
    lessons = session.scalar(
        select(func.count())
        .select_from(Subscriber)
        .where(Subscriber.status == Status.ACTIVE, Subscriber.next_due_at <= now)
    )
    waiting = session.scalar(select(func.count()).select_from(Delivery).where(queued.ready(now)))
    return int(lessons or 0) + int(waiting or 0)


def send_due(
    session: Session,
    transport: Transport,
    composer: Composer,
    window: SendWindow,
    now: datetime,
    *,
    dry_run: bool = False,
    rate_limit: float = 0.0,
    progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> SendReport:
    """Send what is due: queued notices first, then each due subscriber's next lesson.

    At most one lesson per subscriber per run. `stop` is asked before each
    message; when it says yes the run ends there (a graceful shutdown).
    Raises TransportUnavailable (after recording what was done) when the server
    or outbox cannot take mail; the report so far is attached as `.report`.
    """
    report = SendReport(dry_run=dry_run)
    pacer = Pacer(rate_limit)
    try:
        finished = queued.send_queued(
            session,
            transport,
            composer,
            window,
            now,
            report,
            pacer,
            stop=stop,
            progress=progress,
        )
        if not finished:
            return report
        for sub in due_subscribers(session, now):
            if stop and stop():
                return report
            if progress:
                progress(1)
            _send_lesson(session, transport, composer, window, now, sub, report, pacer)
    except TransportUnavailable as exc:
        exc.report = report  # type: ignore[attr-defined]
        raise
    return report


def deliver_now(
    session: Session, transport: Transport, composer: Composer, delivery_id: int, now: datetime
) -> SendReport:
    """Send one queued message at once (a confirmation right after the form is posted)."""
    report = SendReport()
    queued.deliver_queued(session, transport, composer, delivery_id, now, report)
    return report


def _send_lesson(
    session: Session,
    transport: Transport,
    composer: Composer,
    window: SendWindow,
    now: datetime,
    sub: Any,
    report: SendReport,
    pacer: Pacer,
) -> None:
    zone = ZoneInfo(sub.timezone)
    if not window.is_open(now, zone):
        report.waiting += 1
        return
    course = composer.renderer.course
    week = min(sub.next_lesson or 1, course.total)
    key = course.lesson(week).key
    composer.builder(key)  # render before claiming: a broken template claims nothing
    if report.dry_run:
        blocked = ledger.peek(session, sub.id, key, now)
        if blocked is None:
            report.sent += 1
        elif blocked.status == DeliveryStatus.SENDING:
            report.busy += 1
        else:
            report.waiting += 1
        return
    message_id = composer.message_id(sub.id, key, sub.course_round)
    got = ledger.claim(session, sub.id, key, message_id, sub.next_due_at, now)
    if isinstance(got, ledger.Unavailable):
        _unavailable(session, got, sub, week, course.total, window, zone, now, report)
        return
    message = composer.lesson(
        week, subscriber_id=sub.id, email=sub.email, name=sub.name, date=now, message_id=message_id
    )

    def sent() -> None:
        _advance(session, sub.id, week, course.total, next_lesson_due(now, window, zone), now)
        queued.queue_reminder(session, composer, sub, week, now, window, zone)

    def failed() -> None:
        due = max(next_lesson_due(got.due_at, window, zone), window.next_opening(now, zone))
        _advance(session, sub.id, week, course.total, due, now)

    # Give up a day before the next lesson would be due, so two never go out together.
    give_up_at = next_lesson_due(got.due_at, window, zone) - timedelta(days=1)
    pacer.wait()
    deliver(
        session, transport, Attempt(got, sub.id, message, give_up_at, sent, failed), now, report
    )


def _unavailable(
    session: Session,
    got: ledger.Unavailable,
    sub: Any,
    week: int,
    total: int,
    window: SendWindow,
    zone: ZoneInfo,
    now: datetime,
    report: SendReport,
) -> None:
    """The lesson's ledger row says it cannot go now; repair the cursor if it lags behind."""
    if got.status == DeliveryStatus.SENT and got.sent_at:
        # Sent by an earlier run that stopped before moving the schedule on.
        _advance(session, sub.id, week, total, next_lesson_due(got.sent_at, window, zone), now)
        session.commit()
    elif got.status == DeliveryStatus.FAILED:
        # Failed for good earlier: keep the weekly rhythm and move on.
        due = max(next_lesson_due(sub.next_due_at, window, zone), window.next_opening(now, zone))
        _advance(session, sub.id, week, total, due, now)
        session.commit()
        report.waiting += 1
    elif got.status == DeliveryStatus.SENDING:
        report.busy += 1
    else:
        report.waiting += 1


def _advance(
    session: Session, subscriber_id: int, week: int, total: int, due: datetime, now: datetime
) -> None:
    """Move the subscriber's cursor past lesson `week` (completing the course after the last)."""
    values: dict[str, object]
    if week >= total:
        values = {
            "status": Status.COMPLETED,
            "status_changed_at": now,
            "next_lesson": None,
            "next_due_at": None,
        }
    else:
        values = {"next_lesson": week + 1, "next_due_at": due}
    session.execute(
        update(Subscriber)
        .where(Subscriber.id == subscriber_id, Subscriber.next_lesson == week)
        .values(**values)
    )
