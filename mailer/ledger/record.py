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

from sqlalchemy import Connection, Table, bindparam, or_, select, text, update

from mailer.ledger.rules import DELIVERIES, UNCLAIMED
from mailer.store.db import dialect_insert
from mailer.store.models import DeliveryStatus
from subscribers.models import Status, Subscriber

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
        **UNCLAIMED,
    )
    .returning(DELIVERIES.c.id)
)
# The whole of recording a group of accepted messages on PostgreSQL, in one round trip:
# lock the subscribers, mark the messages sent (fenced by the claim token), move the
# cursors and queue the follow-ups of exactly the rows marked.
_ACCEPT_PG = text(
    """
WITH locked AS (
    SELECT id FROM subscribers WHERE id = ANY(CAST(:subs AS integer[])) ORDER BY id FOR UPDATE
), marked AS (
    UPDATE deliveries SET status = 'sent', sent_at = :now, attempts = deliveries.attempts + 1,
        last_error = NULL, next_attempt_at = NULL, updated_at = :now,
        claim_token = NULL, claimed_until = NULL, claimed_by = NULL
    FROM locked
    WHERE deliveries.subscriber_id = locked.id
      AND deliveries.id = ANY(CAST(:ids AS integer[])) AND deliveries.claim_token = :token
    RETURNING deliveries.id
), moves AS (
    SELECT * FROM unnest(CAST(:m_did AS integer[]), CAST(:m_sub AS integer[]),
        CAST(:m_week AS integer[]), CAST(:m_last AS boolean[]), CAST(:m_due AS timestamptz[]))
        AS m(did, sub, week, last, due)
    WHERE m.did IN (SELECT id FROM marked)
), moved AS (
    UPDATE subscribers SET
        next_lesson = CASE WHEN moves.last THEN NULL ELSE moves.week + 1 END,
        next_due_at = CASE WHEN moves.last THEN NULL ELSE moves.due END,
        status = CASE WHEN moves.last THEN 'completed' ELSE subscribers.status END,
        status_changed_at = CASE WHEN moves.last THEN :now ELSE subscribers.status_changed_at END
    FROM moves
    WHERE subscribers.id = moves.sub AND subscribers.next_lesson = moves.week
    RETURNING subscribers.id
), queued AS (
    INSERT INTO deliveries (subscriber_id, key, status, message_id, due_at, attempts, updated_at)
    SELECT f.sub, f.key, 'queued', f.mid, f.due, 0, :now
    FROM unnest(CAST(:f_did AS integer[]), CAST(:f_sub AS integer[]), CAST(:f_key AS text[]),
        CAST(:f_mid AS text[]), CAST(:f_due AS timestamptz[])) AS f(did, sub, key, mid, due)
    WHERE f.did IN (SELECT id FROM marked)
    ON CONFLICT (subscriber_id, key) DO UPDATE SET
        status = 'queued', attempts = 0, next_attempt_at = NULL, sent_at = NULL,
        last_error = NULL, claim_token = NULL, claimed_until = NULL, claimed_by = NULL,
        due_at = EXCLUDED.due_at, updated_at = EXCLUDED.updated_at
    WHERE deliveries.status IN ('failed', 'cancelled')
    RETURNING deliveries.id
)
SELECT id FROM marked
"""
)
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
    **UNCLAIMED,
}


@dataclass(frozen=True)
class Accepted:
    """A message the server took: its claim, and what its being sent changes."""

    delivery_id: int
    token: str
    subscriber_id: int
    advance: Advance | None = None
    follow_up: FollowUp | None = None


def record_accepted(
    connection: Connection, accepted: Sequence[Accepted], now: datetime
) -> set[int]:
    """Record messages the server took: mark them sent where the claim still holds, move
    their cursors on, queue their follow-ups; the delivery ids marked. No commit.

    On PostgreSQL this is one statement (one round trip) per claim token.
    """
    if connection.dialect.name != "postgresql":
        marked = _mark_sent(
            connection, ((a.delivery_id, a.token, a.subscriber_id) for a in accepted), now
        )
        done = [a for a in accepted if a.delivery_id in marked]
        advance(connection, [a.advance for a in done if a.advance], now)
        queue_follow_ups(connection, [a.follow_up for a in done if a.follow_up], now)
        return marked
    by_token: dict[str, list[Accepted]] = {}
    for a in accepted:
        by_token.setdefault(a.token, []).append(a)
    marked = set()
    for token, group in by_token.items():
        moves = [(a.delivery_id, a.advance) for a in group if a.advance]
        follow = [(a.delivery_id, a.follow_up) for a in group if a.follow_up]
        params = {
            "now": now,
            "token": token,
            "subs": sorted({a.subscriber_id for a in group}),
            "ids": [a.delivery_id for a in group],
            "m_did": [d for d, _ in moves],
            "m_sub": [m.subscriber_id for _, m in moves],
            "m_week": [m.week for _, m in moves],
            "m_last": [m.week >= m.total for _, m in moves],
            "m_due": [m.due for _, m in moves],
            "f_did": [d for d, _ in follow],
            "f_sub": [f.subscriber_id for _, f in follow],
            "f_key": [f.key for _, f in follow],
            "f_mid": [f.message_id for _, f in follow],
            "f_due": [f.due_at for _, f in follow],
        }
        marked.update(connection.execute(_ACCEPT_PG, params).scalars())
    return marked


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


def _mark_sent(
    connection: Connection, claims: Iterable[tuple[int, str, int]], now: datetime
) -> set[int]:
    """Mark (delivery id, claim token, subscriber id) sent where the claim holds; the ids marked."""
    by_token: dict[str, list[int]] = {}
    for delivery_id, token, _ in claims:
        by_token.setdefault(token, []).append(delivery_id)
    marked: set[int] = set()
    for token, ids in by_token.items():
        params = {"ids": ids, "token": token, "now": now}
        marked.update(connection.execute(_MARK_SENT, params).scalars())
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


def queue_follow_ups(connection: Connection, follow_ups: Sequence[FollowUp], now: datetime) -> None:
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
    insert = dialect_insert(dialect)
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
