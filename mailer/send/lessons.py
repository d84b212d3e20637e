"""`send_due`: deliver every message that is due now, following SPEC §4 and §5.

Two kinds of work: queued ledger rows (confirmations and welcomes at once;
reminders and broadcasts inside the send window, see `queued`), and course
lessons, found from each subscriber's cursor (next lesson, next due time) and
sent only inside their local send window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from mailer.errors import TransportUnavailable
from mailer.ledger import claims
from mailer.ledger import record as outcomes
from mailer.ledger import rows as ledger
from mailer.ledger.record import Advance
from mailer.send import notices as queued
from mailer.send.attempt import Attempt, Sending, SendReport, deliver
from mailer.store.models import Delivery, DeliveryStatus
from mailer.timing import next_lesson_due
from mailer.transport.base import Transport
from subscribers.models import Status, Subscriber

if TYPE_CHECKING:
    from mailer.content.compose import Composer

__all__ = ["SendReport", "count_due", "deliver_now", "send_due"]

BATCH = 50  # messages claimed at a time: small, so concurrent runs share the work evenly


def count_due(session: Session, now: datetime) -> int:
    """How many messages are due (for progress bars)."""
    lessons = session.scalar(
        select(func.count())
        .select_from(Subscriber)
        .where(Subscriber.status == Status.ACTIVE, Subscriber.next_due_at <= now)
    )
    waiting = session.scalar(select(func.count()).select_from(Delivery).where(queued.ready(now)))
    return int(lessons or 0) + int(waiting or 0)


def send_due(run: Sending) -> SendReport:
    """Send what is due: queued notices first, then each due subscriber's next lesson.

    At most one lesson per subscriber per run. `run.stop` is asked before each
    message; when it says yes the run ends there (a graceful shutdown), and the
    claims it holds but has not used are given back.
    Raises TransportUnavailable (after recording what was done) when the server
    or outbox cannot take mail; the report so far is attached as `.report`.
    """
    try:
        if queued.send_queued(run):
            _send_lessons(run)
    except TransportUnavailable as exc:
        exc.report = run.report  # type: ignore[attr-defined]
        raise
    return run.report


def deliver_now(
    session: Session, transport: Transport, composer: Composer, delivery_id: int, now: datetime
) -> SendReport:
    """Send one queued message at once (a confirmation right after the form is posted)."""
    report = SendReport()
    claim = ledger.claim_row(session, delivery_id, now)
    if claim is None:
        report.busy += 1
        return report
    attempt = queued.prepare(session, composer, claim, now)
    if attempt is not None:
        deliver(session, transport, attempt, now, report)
    return report


def _send_lessons(run: Sending) -> None:
    """Each due subscriber's next lesson, claimed in batches in due order."""
    after: tuple[datetime, int] | None = None
    while True:
        subs = claims.due_subscribers(
            run.session, run.now, after, BATCH, lock=not run.report.dry_run
        )
        if not subs:
            run.session.commit()
            return
        after = (subs[-1].next_due_at, subs[-1].id)
        if not _lesson_batch(run, subs):
            return


def _lesson_batch(run: Sending, subs: Sequence[Any]) -> bool:
    """Claim and send one batch; False when the run was asked to stop."""
    course = run.composer.renderer.course
    wanted: list[tuple[Any, int, ZoneInfo]] = []
    for sub in subs:
        zone = ZoneInfo(sub.timezone)
        if run.window.is_open(run.now, zone):
            wanted.append((sub, min(sub.next_lesson or 1, course.total), zone))
        else:
            run.step()
            run.report.waiting += 1
    for _, week, _ in wanted:
        run.composer.builder(course.lesson(week).key)  # a broken template claims nothing
    if run.report.dry_run:
        run.session.commit()
        for sub, week, _ in wanted:
            run.step()
            _predict(run, sub, course.lesson(week).key)
        return True
    batch = claims.new_batch(run.owner, run.lease, exclusive=run.exclusive)
    got = claims.claim_lessons(
        run.session,
        batch,
        (
            (
                sub.id,
                course.lesson(week).key,
                run.composer.message_id(sub.id, course.lesson(week).key, sub.course_round),
                sub.next_due_at,
            )
            for sub, week, _ in wanted
        ),
        run.now,
    )
    try:
        for sub, week, zone in wanted:
            if run.stopping():
                run.outlet.drain()
                return False
            run.step()
            claim = got.get(sub.id)
            if claim is None:
                continue  # removed between the read and the claim
            if isinstance(claim, ledger.Unavailable):
                _unavailable(run, claim, sub, week, zone)
                continue
            if not _send_lesson(run, batch, claim, sub, week, zone):
                run.outlet.drain()
                return False
        run.outlet.drain()
    except DBAPIError:
        run.session.rollback()  # a failed statement aborts the transaction: start afresh
        raise
    finally:
        run.outlet.settle()
        batch.release_rest(run.session, run.now, "not sent: the run stopped first")
    return True


def _predict(run: Sending, sub: Any, key: str) -> None:
    """Dry run: count what a real run would do with this lesson."""
    blocked = ledger.peek(run.session, sub.id, key, run.now)
    if blocked is None:
        run.report.count_sent(key)
    elif blocked.status == DeliveryStatus.SENDING:
        run.report.busy += 1
    else:
        run.report.waiting += 1


def _send_lesson(
    run: Sending,
    batch: claims.Batch,
    claim: ledger.Claim,
    sub: Any,
    week: int,
    zone: ZoneInfo,
) -> bool:
    """Hand one claimed lesson to the outlet; False if the run is stopping instead."""
    session, now, window, composer = run.session, run.now, run.window, run.composer
    course = composer.renderer.course
    key = course.lesson(week).key
    message = partial(
        composer.lesson,
        week,
        subscriber_id=sub.id,
        email=sub.email,
        name=sub.name,
        date=now,
        message_id=composer.message_id(sub.id, key, sub.course_round),
    )
    failed_due = max(next_lesson_due(claim.due_at, window, zone), window.next_opening(now, zone))
    # Give up a day before the next lesson would be due, so two never go out together.
    give_up_at = next_lesson_due(claim.due_at, window, zone) - timedelta(days=1)
    run.pacer.wait()
    return run.outlet.submit(
        Attempt(
            claim,
            sub.id,
            message,
            give_up_at,
            on_sent=Advance(sub.id, week, course.total, next_lesson_due(now, window, zone)),
            follow_up=queued.reminder_for(composer, sub, week, now, window, zone),
            on_failed=Advance(sub.id, week, course.total, failed_due),
        ),
        lambda: batch.done(claim.delivery_id),
        lambda: batch.hold(session, claim.delivery_id),
    )


def _unavailable(
    run: Sending, got: ledger.Unavailable, sub: Any, week: int, zone: ZoneInfo
) -> None:
    """The lesson's ledger row says it cannot go now; repair the cursor if it lags behind."""
    session, window, now, report = run.session, run.window, run.now, run.report
    total = run.composer.renderer.course.total
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
    outcomes.advance(session.connection(), [Advance(subscriber_id, week, total, due)], now)
