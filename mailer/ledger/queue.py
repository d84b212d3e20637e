"""Queueing and un-queueing: messages that wait in the ledger until a run sends them.

Notices (confirmation, welcome), reminders and broadcasts are rows that wait
as `queued`; lessons are claimed from their subscriber's course cursor
instead (mailer.ledger.claims). These functions put rows in the queue, take
them out again (cancel), put failed ones back (requeue), move queued ones to a
reader's new time (reschedule), file a finished round of the course away under
`r<round>/` keys, and erase a subscriber's history (docs/guarantees.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, delete, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from mailer import keys
from mailer.keys import Kind, MessageKey
from mailer.ledger.rules import UNCLAIMED, WAITING, waiting_notice
from mailer.store.models import Delivery, DeliveryStatus

INSERT_BATCH = 1000  # rows inserted per statement when a broadcast is queued


def enqueue(
    session: Session,
    subscriber_id: int,
    key: str,
    message_id: str,
    due_at: datetime,
    now: datetime,
    *,
    resend_if_sent_before: datetime | None = None,
) -> int | None:
    """Queue (subscriber, key) to go out from `due_at`; no commit.

    Returns the id of the row waiting to go out: a new one; one already queued
    or deferred; a failed or cancelled one, queued again; a sent one only if it
    went out before `resend_if_sent_before`. None when nothing is waiting.
    The decision rests on one read of the row, and the row is only changed if
    nobody changed it since, so two callers never queue one message twice.
    """
    existing = session.execute(
        select(Delivery)
        .where(Delivery.subscriber_id == subscriber_id, Delivery.key == key)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if existing is None:
        row = Delivery(
            subscriber_id=subscriber_id,
            key=key,
            status=DeliveryStatus.QUEUED,
            message_id=message_id,
            due_at=due_at,
            attempts=0,
            updated_at=now,
        )
        session.add(row)
        session.flush()
        return row.id
    if existing.status in WAITING:
        return existing.id
    sent_long_ago = (
        existing.status == DeliveryStatus.SENT
        and resend_if_sent_before is not None
        and existing.sent_at is not None
        and existing.sent_at <= resend_if_sent_before
    )
    if (
        existing.status not in (DeliveryStatus.FAILED, DeliveryStatus.CANCELLED)
        and not sent_long_ago
    ):
        return None
    changed = _rowcount(
        session,
        update(Delivery)
        .where(
            Delivery.id == existing.id,
            Delivery.status == existing.status,
            Delivery.updated_at == existing.updated_at,
        )
        .values(
            status=DeliveryStatus.QUEUED,
            due_at=due_at,
            attempts=0,
            next_attempt_at=None,
            sent_at=None,
            last_error=None,
            updated_at=now,
            **UNCLAIMED,
        ),
    )
    return existing.id if changed == 1 else None


def enqueue_many(
    session: Session,
    key: str,
    recipients: Iterable[tuple[int, str]],
    due_at: datetime,
    now: datetime,
) -> int:
    """Queue `key` for each (subscriber id, Message-ID), all new rows; how many; no commit."""
    total = 0
    batch: list[dict[str, Any]] = []
    for subscriber_id, message_id in recipients:
        batch.append(
            {
                "subscriber_id": subscriber_id,
                "key": key,
                "status": DeliveryStatus.QUEUED,
                "message_id": message_id,
                "due_at": due_at,
                "attempts": 0,
                "updated_at": now,
            }
        )
        if len(batch) >= INSERT_BATCH:
            session.execute(insert(Delivery), batch)
            total, batch = total + len(batch), []
    if batch:
        session.execute(insert(Delivery), batch)
        total += len(batch)
    return total


def cancel_waiting(
    session: Session, subscriber_id: int, now: datetime, reason: str, *, kind: Kind | None = None
) -> None:
    """Cancel the subscriber's waiting messages (all but lessons, or those of `kind`); no commit."""
    which = waiting_notice() if kind is None else keys.of_kind(Delivery.key, kind)
    session.execute(
        update(Delivery)
        .where(Delivery.subscriber_id == subscriber_id, Delivery.status.in_(WAITING), which)
        .values(status=DeliveryStatus.CANCELLED, last_error=reason, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def wait_for_window(session: Session, delivery_id: int, opening: datetime, now: datetime) -> None:
    """A queued message found outside its send window: look at it again when it opens; commits."""
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status.in_(WAITING))
        .values(next_attempt_at=opening, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def reschedule(session: Session, moves: Mapping[int, datetime], now: datetime) -> None:
    """Queued rows not tried yet, due at new times (a reader chose another time zone or time
    of day: README, "The course page"); a row tried or taken meanwhile stays; no commit."""
    for delivery_id, due_at in moves.items():
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.QUEUED)
            .values(due_at=due_at, next_attempt_at=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )


def requeue(session: Session, delivery_id: int, now: datetime, note: str) -> None:
    """Put a failed message back: a lesson for its subscriber's course to pick up, anything
    else into the queue, due now and with no attempts counted; no commit."""
    row = session.get(Delivery, delivery_id)
    if row is None:
        return
    lesson = MessageKey.parse(row.key).kind == Kind.LESSON
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.status == DeliveryStatus.FAILED)
        .values(
            status=DeliveryStatus.DEFERRED if lesson else DeliveryStatus.QUEUED,
            attempts=0,
            next_attempt_at=None,
            due_at=now,
            last_error=note,
            updated_at=now,
            **UNCLAIMED,
        )
        .execution_options(synchronize_session=False)
    )
    session.expire(row)


def retry_lesson(session: Session, subscriber_id: int, week: int, now: datetime) -> None:
    """A lesson that failed for good may be claimed again (the address works again); no commit."""
    session.execute(
        update(Delivery)
        .where(
            Delivery.subscriber_id == subscriber_id,
            Delivery.key == keys.lesson(week),
            Delivery.status == DeliveryStatus.FAILED,
        )
        .values(status=DeliveryStatus.DEFERRED, next_attempt_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def archive(
    session: Session, subscriber_id: int, current: Sequence[str], round_: int, now: datetime
) -> bool:
    """File this round's rows of the keys `current` away as `r<round_>/<key>` (waiting ones
    cancelled), so the messages can go out again; no commit. False, changing nothing, while
    one of them is being sent."""
    rows = session.scalars(
        select(Delivery).where(Delivery.subscriber_id == subscriber_id, Delivery.key.in_(current))
    ).all()
    if any(row.status == DeliveryStatus.SENDING for row in rows):
        return False
    for row in rows:
        values: dict[str, object] = {
            "key": str(MessageKey.parse(row.key).archived(round_)),
            "updated_at": now,
        }
        if row.status in WAITING:
            values.update(
                status=DeliveryStatus.CANCELLED,
                last_error="replaced: the operator moved the course on",
            )
        session.execute(
            update(Delivery)
            .where(Delivery.id == row.id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        session.expire(row)
    return True


def erase(session: Session, subscriber_id: int) -> None:
    """Delete the subscriber's whole delivery history (erasure); no commit."""
    session.execute(delete(Delivery).where(Delivery.subscriber_id == subscriber_id))


def _rowcount(session: Session, statement: Update) -> int:
    result = session.execute(statement.execution_options(synchronize_session=False))
    assert isinstance(result, CursorResult)
    return result.rowcount
