"""`send_due`: deliver every course lesson that is due now, following SPEC §4 and §5."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.orm import Session

from mailer import ledger
from mailer.compose import Composer
from mailer.errors import TransportUnavailable
from mailer.models import DeliveryStatus
from mailer.timing import SendWindow, next_lesson_due
from mailer.transport import (
    MessageRefused,
    RecipientRefused,
    TemporaryFailure,
    Transport,
)
from subscribers.models import Status, Subscriber

BATCH = 500


@dataclass
class SendReport:
    """What one run did; `deferred` are transient failures to be retried later."""

    sent: int = 0
    failed: int = 0
    deferred: int = 0
    bounced: int = 0
    waiting: int = 0  # due, but outside the subscriber's send window or before a retry time
    busy: int = 0  # claimed by another run that is still sending
    dry_run: bool = False
    failures: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line for people and cron mail."""
        verb = "would send" if self.dry_run else "sent"
        parts = [f"{verb} {self.sent}", f"failed {self.failed}", f"deferred {self.deferred}"]
        if self.bounced:
            parts.append(f"bounced {self.bounced}")
        if self.waiting:
            parts.append(f"waiting {self.waiting}")
        if self.busy:
            parts.append(f"busy {self.busy}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, object]:
        """The --json object."""
        return {
            "sent": self.sent,
            "failed": self.failed,
            "deferred": self.deferred,
            "bounced": self.bounced,
            "waiting": self.waiting,
            "busy": self.busy,
            "dry_run": self.dry_run,
            "failures": self.failures,
        }


class Pacer:
    """Keeps a run under `rate` messages per second (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0

    def wait(self) -> None:
        """Sleep until the next message may go."""
        if not self.interval:
            return
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
            now = self._next
        self._next = max(now, self._next) + self.interval


def due_subscribers(session: Session, now: datetime) -> Iterator[Any]:
    """Active subscribers whose next lesson is due, streamed in batches by due time."""
    columns = (
        Subscriber.id,
        Subscriber.email,
        Subscriber.name,
        Subscriber.timezone,
        Subscriber.next_lesson,
        Subscriber.next_due_at,
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
    """How many subscribers have a lesson due (for progress bars)."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Subscriber)
            .where(Subscriber.status == Status.ACTIVE, Subscriber.next_due_at <= now)
        )
        or 0
    )


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
) -> SendReport:
    """Send each due subscriber their next lesson, at most one per subscriber per run.

    Raises TransportUnavailable (after recording what was done) when the server
    or outbox cannot take mail; the report so far is attached as `.report`.
    """
    report = SendReport(dry_run=dry_run)
    pacer = Pacer(rate_limit)
    total = composer.renderer.course.total
    for sub in due_subscribers(session, now):
        if progress:
            progress(1)
        zone = ZoneInfo(sub.timezone)
        if not window.is_open(now, zone):
            report.waiting += 1
            continue
        week = min(sub.next_lesson or 1, total)
        key = composer.renderer.course.lesson(week).key
        composer.builder(key)  # render before claiming: a broken template claims nothing
        if dry_run:
            blocked = ledger.peek(session, sub.id, key, now)
            if blocked is None:
                report.sent += 1
            elif blocked.status == DeliveryStatus.SENDING:
                report.busy += 1
            else:
                report.waiting += 1
            continue
        message_id = composer.message_id(sub.id, key)
        got = ledger.claim(session, sub.id, key, message_id, sub.next_due_at, now)
        if isinstance(got, ledger.Unavailable):
            if got.status == DeliveryStatus.SENT and got.sent_at:
                # Sent by an earlier run that stopped before moving the schedule on.
                _advance(
                    session, sub.id, week, total, next_lesson_due(got.sent_at, window, zone), now
                )
                session.commit()
            elif got.status == DeliveryStatus.FAILED:
                # Failed for good earlier: keep the weekly rhythm and move on.
                due = max(
                    next_lesson_due(sub.next_due_at, window, zone), window.next_opening(now, zone)
                )
                _advance(session, sub.id, week, total, due, now)
                session.commit()
                report.waiting += 1
            elif got.status == DeliveryStatus.SENDING:
                report.busy += 1
            else:
                report.waiting += 1
            continue
        message = composer.lesson(
            week,
            subscriber_id=sub.id,
            email=sub.email,
            name=sub.name,
            date=now,
            message_id=message_id,
        )
        pacer.wait()
        try:
            transport.send(message)
        except TransportUnavailable as exc:
            ledger.release(session, got, now, str(exc))
            session.commit()
            exc.report = report  # type: ignore[attr-defined]
            raise
        except TemporaryFailure as exc:
            _temporary(session, got, sub, week, total, window, zone, now, exc.reply, report)
        except RecipientRefused as exc:
            if ledger.mark_failed(session, got, now, exc.reply):
                session.execute(
                    update(Subscriber)
                    .where(Subscriber.id == sub.id)
                    .values(status=Status.BOUNCED, status_changed_at=now, next_due_at=None)
                )
            report.failed += 1
            report.bounced += 1
            report.failures.append({"email": sub.email, "key": key, "reply": exc.reply})
        except MessageRefused as exc:
            if ledger.mark_failed(session, got, now, exc.reply):
                _advance(session, sub.id, week, total, _after_failure(got, window, zone, now), now)
            report.failed += 1
            report.failures.append({"email": sub.email, "key": key, "reply": exc.reply})
        else:
            if ledger.mark_sent(session, got, now):
                _advance(session, sub.id, week, total, next_lesson_due(now, window, zone), now)
                report.sent += 1
        session.commit()
    return report


def _temporary(
    session: Session,
    got: ledger.Claim,
    sub: Any,
    week: int,
    total: int,
    window: SendWindow,
    zone: ZoneInfo,
    now: datetime,
    reply: str,
    report: SendReport,
) -> None:
    """A transient failure: retry with backoff, or give up before the next lesson is due."""
    retry_at = now + ledger.retry_delay(got.attempts + 1)
    give_up_at = next_lesson_due(got.due_at, window, zone) - timedelta(days=1)
    if retry_at < give_up_at:
        ledger.mark_deferred(session, got, now, reply, retry_at)
        report.deferred += 1
        return
    reply = f"gave up after {got.attempts + 1} attempts: {reply}"
    if ledger.mark_failed(session, got, now, reply):
        _advance(session, sub.id, week, total, _after_failure(got, window, zone, now), now)
    report.failed += 1
    report.failures.append({"email": sub.email, "key": f"lesson-{week}", "reply": reply})


def _after_failure(
    got: ledger.Claim, window: SendWindow, zone: ZoneInfo, now: datetime
) -> datetime:
    """After a lesson failed for good, the next keeps the weekly rhythm of the failed one."""
    return max(next_lesson_due(got.due_at, window, zone), window.next_opening(now, zone))


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
