"""Course lessons as a source of due mail: each due subscriber's next lesson, in their window.

A lesson is found from the subscriber's course cursor (next lesson, next due
time), goes only while their local send window is open, and moves the cursor
on once the server takes it (docs/scheduling.md). A lesson whose ledger row
says it went (or failed) earlier only has the cursor repaired.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from mailer.ledger import claims, record
from mailer.ledger.batch import Batch
from mailer.ledger.record import Advance
from mailer.ledger.rules import Claim, Unavailable
from mailer.send import notices
from mailer.send.attempt import Attempt
from mailer.send.batches import held, spent
from mailer.send.context import Sending
from mailer.store.models import DeliveryStatus
from mailer.timing import SendWindow, next_lesson_due

Wanted = tuple[Any, int, ZoneInfo, SendWindow]  # (subscriber row, week, zone, their window)


class Lessons:
    """The batch loop's source of due lessons (mailer.send.batches)."""

    def fetch(self, run: Sending, after: Any, limit: int) -> Sequence[Any]:
        return claims.due_subscribers(
            run.session, run.now, after, limit, lock=not run.report.dry_run
        )

    def cursor(self, row: Any) -> tuple[datetime, int]:
        return (row.next_due_at, row.id)

    def wanted(self, run: Sending, rows: Sequence[Any]) -> list[Wanted]:
        course = run.composer.renderer.course
        found: list[Wanted] = []
        for sub in rows:
            zone = ZoneInfo(sub.timezone)
            window = run.policy.windows.of(sub.time_of_day)
            if window.is_open(run.now, zone):
                found.append((sub, min(sub.next_lesson or 1, course.total), zone, window))
            else:
                run.step()
                run.report.waiting += 1
        for _, week, _, _ in found:
            run.composer.builder(course.lesson(week).key)  # a broken template claims nothing
        return found

    def predict(self, run: Sending, items: list[Wanted]) -> None:
        course = run.composer.renderer.course
        for sub, week, _, _ in items:
            run.step()
            key = course.lesson(week).key
            blocked = claims.peek(run.session, sub.id, key, run.now)
            if blocked is None:
                run.report.count_sent(key)
            elif blocked.status == DeliveryStatus.SENDING:
                run.report.busy += 1
            else:
                run.report.waiting += 1

    def claim(self, run: Sending, batch: Batch, items: list[Wanted]) -> dict[int, Any]:
        composer = run.composer
        course = composer.renderer.course
        return claims.claim_lessons(
            run.session,
            batch,
            (
                (
                    sub.id,
                    course.lesson(week).key,
                    composer.message_id(
                        sub.id, sub.email, course.lesson(week).key, sub.course_round
                    ),
                    sub.next_due_at,
                )
                for sub, week, _, _ in items
            ),
            run.now,
        )

    def submit(self, run: Sending, batch: Batch, item: Wanted, got: dict[int, Any]) -> bool:
        sub, week, zone, window = item
        claim = got.get(sub.id)
        if claim is None:
            return True  # removed between the read and the claim
        if isinstance(claim, Unavailable):
            _unavailable(run, claim, sub, week, zone, window)
            return True
        return _send(run, batch, claim, item)


def _send(run: Sending, batch: Batch, claim: Claim, item: Wanted) -> bool:
    """Hand one claimed lesson to the outlet; False if the run is stopping instead."""
    sub, week, zone, window = item
    now, composer = run.now, run.composer
    course = composer.renderer.course
    key = course.lesson(week).key
    message = partial(
        composer.lesson,
        week,
        subscriber_id=sub.id,
        email=sub.email,
        name=sub.name,
        date=now,
        message_id=composer.message_id(sub.id, sub.email, key, sub.course_round),
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
            follow_up=notices.reminder_for(composer, sub, week, now, window, zone),
            on_failed=Advance(sub.id, week, course.total, failed_due),
        ),
        spent(batch, claim.delivery_id),
        held(run, batch, claim.delivery_id),
    )


def _unavailable(
    run: Sending, got: Unavailable, sub: Any, week: int, zone: ZoneInfo, window: SendWindow
) -> None:
    """The lesson's ledger row says it cannot go now; repair the cursor if it lags behind."""
    session, now, report = run.session, run.now, run.report
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
    record.advance(session.connection(), [Advance(subscriber_id, week, total, due)], now)
