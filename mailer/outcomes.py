"""Recording accepted messages in bulk: ledger rows, course cursors, follow-up reminders.

The answers that come back together are written with a few statements in one
transaction, whatever their number: one fenced UPDATE … RETURNING marks the
messages sent, one executemany moves the cursors on, one upsert queues the
reminders. The statements are built once (Core, bound parameters), so each
run compiles them once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, Table, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from mailer.models import Delivery, DeliveryStatus
from subscribers.models import Status, Subscriber

DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]
SUBSCRIBERS: Table = Subscriber.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Advance:
    """Move a subscriber's course cursor past lesson `week`; the next one is due at `due`."""

    subscriber_id: int
    week: int
    total: int
    due: datetime


@dataclass(frozen=True)
class FollowUp:
    """A message to queue once this one is sent (a lesson's mid-week reminder)."""

    subscriber_id: int
    key: str
    message_id: str
    due_at: datetime


_MARK_SENT = (
    update(DELIVERIES)
    .where(
        DELIVERIES.c.id.in_(bindparam("ids", expanding=True)),
        DELIVERIES.c.claim_token == bindparam("token"),
    )
    .values(
        status=DeliveryStatus.SENT,
        sent_at=bindparam("now"),
        attempts=DELIVERIES.c.attempts + 1,
        last_error=None,
        next_attempt_at=None,
        updated_at=bindparam("now"),
        claim_token=None,
        claimed_until=None,
        claimed_by=None,
    )
    .returning(DELIVERIES.c.id)
)
_LOCKED = (
    select(SUBSCRIBERS.c.id)
    .where(SUBSCRIBERS.c.id.in_(bindparam("subscribers", expanding=True)))
    .order_by(SUBSCRIBERS.c.id)
    .with_for_update()
    .subquery("locked")
)
_MARK_SENT_LOCKING = _MARK_SENT.where(DELIVERIES.c.subscriber_id == _LOCKED.c.id)
_WHERE_CURSOR = (
    SUBSCRIBERS.c.id == bindparam("b_id"),
    SUBSCRIBERS.c.next_lesson == bindparam("b_week"),
)
_MOVE = (
    update(SUBSCRIBERS)
    .where(*_WHERE_CURSOR)
    .values(next_lesson=bindparam("b_next"), next_due_at=bindparam("b_due"))
)
_COMPLETE = (
    update(SUBSCRIBERS)
    .where(*_WHERE_CURSOR)
    .values(
        status=Status.COMPLETED,
        status_changed_at=bindparam("b_now"),
        next_lesson=None,
        next_due_at=None,
    )
)
_REQUEUE = {
    "status": DeliveryStatus.QUEUED,
    "attempts": 0,
    "next_attempt_at": None,
    "sent_at": None,
    "last_error": None,
    "claim_token": None,
    "claimed_until": None,
    "claimed_by": None,
}


def lock_subscribers(connection: Connection, subscriber_ids: Iterable[int]) -> None:
    """On PostgreSQL, lock the subscribers' rows before their ledger rows (no commit).

    Every writer takes a subscriber's row before its ledger rows (claiming does,
    with FOR UPDATE SKIP LOCKED), so two runs never wait on each other in a
    circle: a deadlock would abort one of them.
    """
    if connection.dialect.name == "postgresql":
        ids = sorted(set(subscriber_ids))
        connection.execute(
            select(SUBSCRIBERS.c.id).where(SUBSCRIBERS.c.id.in_(ids)).with_for_update()
        )


def mark_sent(
    connection: Connection, claims: Iterable[tuple[int, str, int]], now: datetime
) -> set[int]:
    """Mark (delivery id, claim token, subscriber id) sent where the claim holds; the ids marked.

    On PostgreSQL the same statement first locks the subscribers' rows (see
    lock_subscribers), saving a round trip per group of answers.
    """
    by_token: dict[str, tuple[list[int], list[int]]] = {}
    for delivery_id, token, subscriber_id in claims:
        ids, subscribers = by_token.setdefault(token, ([], []))
        ids.append(delivery_id)
        subscribers.append(subscriber_id)
    statement = _MARK_SENT_LOCKING if connection.dialect.name == "postgresql" else _MARK_SENT
    marked: set[int] = set()
    for token, (ids, subscribers) in by_token.items():
        params = {"ids": ids, "token": token, "now": now, "subscribers": sorted(subscribers)}
        marked.update(connection.execute(statement, params).scalars())
    return marked


def advance(connection: Connection, moves: Sequence[Advance], now: datetime) -> None:
    """Move each cursor past its lesson (completing the course after the last); no commit."""
    onward = [
        {"b_id": m.subscriber_id, "b_week": m.week, "b_next": m.week + 1, "b_due": m.due}
        for m in moves
        if m.week < m.total
    ]
    done = [
        {"b_id": m.subscriber_id, "b_week": m.week, "b_now": now}
        for m in moves
        if m.week >= m.total
    ]
    if onward:
        connection.execute(_MOVE, onward)
    if done:
        connection.execute(_COMPLETE, done)


def enqueue(connection: Connection, follow_ups: Sequence[FollowUp], now: datetime) -> None:
    """Queue each follow-up: a new row, or a failed or cancelled one again; no commit.

    A row already queued, deferred, sending or sent is left as it is.
    """
    if follow_ups:
        connection.execute(
            _upsert(connection.dialect.name),
            [
                {
                    "b_sub": f.subscriber_id,
                    "b_key": f.key,
                    "b_mid": f.message_id,
                    "b_due": f.due_at,
                    "b_now": now,
                }
                for f in follow_ups
            ],
        )


@cache
def _upsert(dialect: str) -> Any:
    """INSERT … ON CONFLICT DO UPDATE for queueing, built once per dialect."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(DELIVERIES).values(
        subscriber_id=bindparam("b_sub"),
        key=bindparam("b_key"),
        status=DeliveryStatus.QUEUED,
        message_id=bindparam("b_mid"),
        due_at=bindparam("b_due"),
        attempts=0,
        updated_at=bindparam("b_now"),
    )
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[DELIVERIES.c.subscriber_id, DELIVERIES.c.key],
        set_={**_REQUEUE, "due_at": excluded.due_at, "updated_at": excluded.updated_at},
        # No IN (…): an expanding parameter cannot be used with executemany.
        where=or_(
            DELIVERIES.c.status == DeliveryStatus.FAILED,
            DELIVERIES.c.status == DeliveryStatus.CANCELLED,
        ),
    )
