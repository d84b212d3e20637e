"""Service functions that change who is on the course: add, import, leave, erase."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import CursorResult, delete, func, insert, select
from sqlalchemy.orm import Session

from mailer import keys
from mailer.errors import Conflict, NotFound
from mailer.keys import Kind
from mailer.ledger import queue
from mailer.store.models import Change, Delivery, DeliveryStatus
from mailer.timing import SendWindow, TimeOfDay, Windows, first_lesson_due, next_lesson_due
from subscribers.csvfile import BadRow, Row
from subscribers.models import Status, Subscriber
from subscribers.validation import check_timezone, clean_name, normalize_email

IMPORT_BATCH = 1000


def find_subscriber(session: Session, email: str) -> Subscriber:
    """The subscriber with this address (case-insensitive), or NotFound."""
    sub = session.scalar(
        select(Subscriber).where(func.lower(Subscriber.email) == email.strip().lower())
    )
    if sub is None:
        raise NotFound(f"no subscriber with address {email.strip()!r}")
    return sub


def no_way_back(sub: Subscriber) -> str | None:
    """Why nobody may sign `sub` up or add them again, or None: a reader who complained
    gets no more mail of any kind, not even a confirmation (README, "Complaints").
    This is the one test the sign-up paths and `subscribers add` share."""
    if sub.status != Status.COMPLAINED:
        return None
    return (
        f"{sub.email} marked our mail as spam, so they get nothing more from us, not even a "
        f"confirmation; they can come back only by writing to you, and then "
        f"`rekindle-mail subscribers remove {sub.email}` lets them sign up afresh"
    )


def _new_row(
    email: str, name: str | None, timezone: str, now: datetime, window: SendWindow, source: str
) -> dict[str, object]:
    return {
        "email": email,
        "name": name,
        "timezone": timezone,
        "status": Status.ACTIVE,
        "source": source,
        "created_at": now,
        "confirmed_at": None,
        "status_changed_at": now,
        "started_at": now,
        "next_lesson": 1,
        "next_due_at": first_lesson_due(now, window, ZoneInfo(timezone)),
    }


def add_subscriber(
    session: Session,
    email: str,
    *,
    name: str | None,
    timezone: str,
    now: datetime,
    window: SendWindow,
    source: str = "operator",
) -> Subscriber:
    """Validate and store an active subscriber whose course starts now; commits."""
    address = normalize_email(email)
    row = _new_row(address, clean_name(name), check_timezone(timezone), now, window, source)
    existing = session.scalar(
        select(Subscriber).where(func.lower(Subscriber.email) == address.lower())
    )
    if existing is not None:
        refused = no_way_back(existing)
        raise Conflict(
            refused or f"{existing.email} is already a subscriber (status: {existing.status})"
        )
    sub = Subscriber(**row)
    session.add(sub)
    session.commit()
    return sub


@dataclass
class ImportReport:
    """What an import did (or would do, on a dry run)."""

    imported: int = 0
    existing: list[str] = field(default_factory=list)
    rejected: list[BadRow] = field(default_factory=list)
    dry_run: bool = False
    statuses: Counter[str] = field(default_factory=Counter)


def import_subscribers(
    session: Session,
    rows: Iterable[Row | BadRow],
    *,
    default_timezone: str,
    now: datetime,
    windows: Windows,
    dry_run: bool = False,
) -> ImportReport:
    """Store every valid row; skip addresses already present; commit per batch.

    A row without a status is a new active subscriber (lesson 1 at their next
    window). A row with one keeps it: nobody who left, bounced or never
    confirmed becomes active, and a pending row gets no confirmation email.
    An address already present keeps its state: import never changes it. The
    reader's own choices (time of day, reminders) are restored with them.
    """
    report = ImportReport(dry_run=dry_run)
    batch: list[Row] = []

    def flush() -> None:
        lowered = [r.email.lower() for r in batch]
        present = set(
            session.scalars(
                select(func.lower(Subscriber.email)).where(
                    func.lower(Subscriber.email).in_(lowered)
                )
            )
        )
        fresh = []
        for r in batch:
            if r.email.lower() in present:
                report.existing.append(r.email)
            else:
                fresh.append(_imported_row(r, default_timezone, now, windows))
                report.statuses[str(fresh[-1]["status"])] += 1
        if fresh and not dry_run:
            session.execute(insert(Subscriber), fresh)
            session.commit()
        report.imported += len(fresh)
        batch.clear()

    for row in rows:
        if isinstance(row, BadRow):
            report.rejected.append(row)
            continue
        batch.append(row)
        if len(batch) >= IMPORT_BATCH:
            flush()
    if batch:
        flush()
    return report


def _imported_row(
    r: Row, default_timezone: str, now: datetime, windows: Windows
) -> dict[str, object]:
    """The stored form of an imported row: its status, consent record, place in the course
    and the reader's own choices."""
    zone = r.timezone or default_timezone
    window = windows.of(r.time_of_day)
    row = _new_row(r.email, r.name, zone, now, window, r.source or "import")
    row["created_at"] = r.created_at or now
    row["confirmed_at"] = r.confirmed_at
    row["time_of_day"] = r.time_of_day or TimeOfDay.MORNING
    row["reminders"] = True if r.reminders is None else r.reminders
    status = r.status or Status.ACTIVE
    if status == Status.ACTIVE:
        if r.next_lesson is not None:  # a restore: the course goes on where it was
            row["next_lesson"] = r.next_lesson
            row["next_due_at"] = r.next_due or window.next_opening(now, ZoneInfo(zone))
        return row
    row["status"] = status
    row["next_due_at"] = None
    if status == Status.PAUSED:
        row["next_lesson"] = r.next_lesson or 1
    elif status == Status.PENDING:
        # Confirming later continues at next_lesson if the person had begun the course.
        row["next_lesson"] = r.next_lesson
        row["started_at"] = now if r.next_lesson is not None else None
    else:
        row["next_lesson"] = None
        row["started_at"] = now if status == Status.COMPLETED else None
    return row


def last_lesson_sent(session: Session, subscriber_id: int) -> datetime | None:
    """When the subscriber's most recent lesson went out (in any round of the course)."""
    return session.scalar(
        select(func.max(Delivery.sent_at)).where(
            Delivery.subscriber_id == subscriber_id,
            keys.of_kind(Delivery.key, Kind.LESSON, any_round=True),
            Delivery.status == DeliveryStatus.SENT,
        )
    )


def earliest_next_lesson(session: Session, sub: Subscriber, window: SendWindow) -> datetime | None:
    """Rule 2: the next lesson may not go before the window a week after the last one."""
    last = last_lesson_sent(session, sub.id)
    return next_lesson_due(last, window, ZoneInfo(sub.timezone)) if last else None


def leave(session: Session, sub: Subscriber, now: datetime) -> None:
    """Unsubscribe `sub`: no lesson is scheduled and queued notices are cancelled; no commit."""
    sub.status = Status.UNSUBSCRIBED
    sub.status_changed_at = now
    sub.next_due_at = None
    queue.cancel_waiting(session, sub.id, now, "the subscriber unsubscribed")


def complain(session: Session, sub: Subscriber, now: datetime) -> None:
    """`sub` marked our mail as spam: `complained`, no lesson scheduled, every waiting message
    cancelled; no more mail of any kind (README, "Complaints"); no commit."""
    sub.status = Status.COMPLAINED
    sub.status_changed_at = now
    sub.next_due_at = None
    reason = "the subscriber marked our mail as spam"
    queue.cancel_waiting(session, sub.id, now, reason)
    queue.cancel_waiting(session, sub.id, now, reason, kind=Kind.LESSON)


def remove(session: Session, email: str) -> str:
    """Erase the subscriber and their delivery history (GDPR art. 17); commits."""
    sub = find_subscriber(session, email)
    address = sub.email
    erase(session, sub)
    return address


def erase(session: Session, sub: Subscriber) -> bool:
    """Delete the subscriber, their delivery history and the history of their course;
    commits. False when another request erased them first (so only one says goodbye)."""
    queue.erase(session, sub.id)
    session.execute(delete(Change).where(Change.subscriber_id == sub.id))
    result = session.execute(delete(Subscriber).where(Subscriber.id == sub.id))
    assert isinstance(result, CursorResult)
    session.commit()
    return result.rowcount == 1
