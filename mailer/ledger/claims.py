"""Claiming work in batches, keeping the claims, and handing back the claims of dead runs.

A run claims a small batch of due messages in one transaction: on PostgreSQL
the candidate rows are locked with `FOR UPDATE SKIP LOCKED`, so concurrent runs
on any number of machines take disjoint batches; the ledger row of each message
is then set to `sending` with a lease, the batch's token and the run's name.
Every later write is fenced by (row, token): a run that lost a claim (its
lease ran out while it was stopped) can neither send the message nor
overwrite what the new owner recorded.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, text, tuple_, update
from sqlalchemy.orm import Session

from mailer.ledger.batch import Batch
from mailer.ledger.rules import (
    DELIVERIES,
    LEASE,
    Claim,
    Unavailable,
    claimable,
    ready_notice,
    wall_clock,
)
from mailer.store.db import dialect_insert
from mailer.store.models import Delivery, DeliveryStatus
from subscribers.models import Status, Subscriber

SUBSCRIBER_COLUMNS = (
    Subscriber.id,
    Subscriber.email,
    Subscriber.name,
    Subscriber.timezone,
    Subscriber.next_lesson,
    Subscriber.next_due_at,
    Subscriber.course_round,
    Subscriber.reminders,
    Subscriber.time_of_day,
)


def due_subscribers(
    session: Session,
    now: datetime,
    after: tuple[datetime, int] | None,
    limit: int,
    *,
    lock: bool = True,
) -> Sequence[Any]:
    """The next `limit` active subscribers whose lesson is due, after `after` in due order.

    On PostgreSQL the rows are locked until the caller commits, and rows another
    run has locked are skipped: that run is claiming them.
    """
    query = (
        select(*SUBSCRIBER_COLUMNS)
        .where(Subscriber.status == Status.ACTIVE, Subscriber.next_due_at <= now)
        .order_by(Subscriber.next_due_at, Subscriber.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(tuple_(Subscriber.next_due_at, Subscriber.id) > after)
    if lock and _is_postgres(session):
        query = query.with_for_update(skip_locked=True, of=Subscriber)
    return session.execute(query).all()


def claim_lessons(
    session: Session,
    batch: Batch,
    wanted: Iterable[tuple[int, str, str, datetime]],
    now: datetime,
) -> dict[int, Claim | Unavailable]:
    """Claim (subscriber, key) for each of `wanted` = (subscriber id, key, Message-ID, due).

    One statement creates the missing ledger rows already claimed (the usual
    case: a lesson's first attempt); a second takes over the existing rows that
    may be claimed now; the rest are read back to say why not. Commits (ending
    the row locks).
    """
    rows = list(wanted)
    if not rows:
        session.commit()
        return {}
    wall = wall_clock()
    connection = session.connection()
    shared = {
        "b_token": batch.token,
        "b_until": wall + batch.lease,
        "b_owner": batch.owner,
        "b_now": now,
    }
    got: dict[int, Claim | Unavailable] = {}

    def take(result: Any) -> None:
        for row in result:
            got[row.subscriber_id] = Claim(row.id, batch.token, row.attempts, row.due_at)
            batch.held.add(row.id)

    if _is_postgres(session):
        # One short statement over arrays: psycopg converts its text once and keeps
        # it, where a multi-row VALUES list is a new, long text for every batch.
        take(
            connection.execute(
                _CLAIM_INSERT_PG,
                {
                    "subs": [row[0] for row in rows],
                    "keys": [row[1] for row in rows],
                    "mids": [row[2] for row in rows],
                    "dues": [row[3] for row in rows],
                    **shared,
                },
            )
        )
    else:
        params = [
            {"b_sub": sub_id, "b_key": key, "b_mid": message_id, "b_due": due_at, **shared}
            for sub_id, key, message_id, due_at in rows
        ]
        take(connection.execute(_claim_insert(), params))
    existing = [(sub_id, key) for sub_id, key, _, _ in rows if sub_id not in got]
    if existing:
        c = DELIVERIES.c
        pairs = tuple_(c.subscriber_id, c.key).in_(existing)
        take(
            connection.execute(
                update(DELIVERIES)
                .where(pairs, claimable(now, wall))
                .values(
                    status=DeliveryStatus.SENDING,
                    claim_token=batch.token,
                    claimed_until=wall + batch.lease,
                    claimed_by=batch.owner,
                    updated_at=now,
                )
                .returning(c.id, c.subscriber_id, c.attempts, c.due_at)
            )
        )
        missing = [(sub_id, key) for sub_id, key in existing if sub_id not in got]
        if missing:
            # Not claimable a moment ago (or just taken by another run): say why.
            for row in session.execute(
                select(c.subscriber_id, *_why_columns(now, wall)).where(
                    tuple_(c.subscriber_id, c.key).in_(missing)
                )
            ):
                got[row.subscriber_id] = _why(row)
    session.commit()
    batch.renewed = time.monotonic()
    return got


_CLAIM_INSERT_PG = text(
    """
INSERT INTO deliveries (subscriber_id, key, message_id, due_at, attempts, status,
    claim_token, claimed_until, claimed_by, updated_at)
SELECT n.sub, n.key, n.mid, n.due, 0, 'sending', :b_token, :b_until, :b_owner, :b_now
FROM unnest(CAST(:subs AS integer[]), CAST(:keys AS text[]), CAST(:mids AS text[]),
    CAST(:dues AS timestamptz[])) AS n(sub, key, mid, due)
ON CONFLICT (subscriber_id, key) DO NOTHING
RETURNING id, subscriber_id, attempts, due_at
"""
).columns(DELIVERIES.c.id, DELIVERIES.c.subscriber_id, DELIVERIES.c.attempts, DELIVERIES.c.due_at)


@cache
def _claim_insert() -> Any:
    """SQLite's INSERT … ON CONFLICT DO NOTHING … RETURNING: new ledger rows, born claimed.

    Built once and run with one parameter set per message (executemany, which
    SQLAlchemy sends as multi-row statements). PostgreSQL uses _CLAIM_INSERT_PG.
    """
    insert = dialect_insert("sqlite")
    c = DELIVERIES.c
    statement = insert(DELIVERIES).values(
        subscriber_id=bindparam("b_sub"),
        key=bindparam("b_key"),
        message_id=bindparam("b_mid"),
        due_at=bindparam("b_due"),
        attempts=0,
        status=DeliveryStatus.SENDING,
        claim_token=bindparam("b_token"),
        claimed_until=bindparam("b_until"),
        claimed_by=bindparam("b_owner"),
        updated_at=bindparam("b_now"),
    )
    return statement.on_conflict_do_nothing(index_elements=[c.subscriber_id, c.key]).returning(
        c.id, c.subscriber_id, c.attempts, c.due_at
    )


def ready_notices(
    session: Session, now: datetime, after: int | None, limit: int, *, lock: bool = True
) -> Sequence[Any]:
    """The next `limit` queued messages that are ready at `now`, by id; locked on PostgreSQL
    (SKIP LOCKED)."""
    query = (
        select(
            Delivery.id,
            Delivery.key,
            Delivery.subscriber_id,
            Subscriber.timezone,
            Subscriber.time_of_day,
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(ready_notice(now))
        .order_by(Delivery.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Delivery.id > after)
    if lock and _is_postgres(session):
        query = query.with_for_update(skip_locked=True, of=Delivery)
    return session.execute(query).all()


def claim_notices(
    session: Session, batch: Batch, ids: Sequence[int], now: datetime
) -> dict[int, Claim]:
    """Claim the queued messages `ids` that are still ready; commits."""
    got: dict[int, Claim] = {}
    if ids:
        result = session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), ready_notice(now))
            .values(
                status=DeliveryStatus.SENDING,
                claim_token=batch.token,
                claimed_until=wall_clock() + batch.lease,
                claimed_by=batch.owner,
                updated_at=now,
            )
            .returning(Delivery.id, Delivery.attempts, Delivery.due_at)
            .execution_options(synchronize_session=False)
        )
        for row in result:
            got[row.id] = Claim(row.id, batch.token, row.attempts, row.due_at)
            batch.held.add(row.id)
    session.commit()
    batch.renewed = time.monotonic()
    return got


def claim_one(
    session: Session, delivery_id: int, now: datetime, lease: timedelta = LEASE
) -> Claim | None:
    """Claim one queued message that is ready at `now` (or abandoned); commits.
    None: it is not there to be claimed."""
    token = uuid.uuid4().hex
    wall = wall_clock()
    row = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, ready_or_abandoned(now, wall))
        .values(
            status=DeliveryStatus.SENDING,
            claim_token=token,
            claimed_until=wall + lease,
            updated_at=now,
        )
        .returning(Delivery.id, Delivery.attempts, Delivery.due_at)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    session.commit()
    return None if row is None else Claim(row.id, token, row.attempts, row.due_at)


def ready_or_abandoned(now: datetime, wall: datetime) -> Any:
    """A queued message ready at `now`, or one whose claim has run out."""
    return or_(
        ready_notice(now),
        and_(Delivery.status == DeliveryStatus.SENDING, Delivery.claimed_until <= wall),
    )


def peek(session: Session, subscriber_id: int, key: str, now: datetime) -> Unavailable | None:
    """What claiming (subscriber, key) would answer, without writing: None when it could be
    claimed now (there is no row, or the row is claimable)."""
    c = DELIVERIES.c
    row = session.execute(
        select(*_why_columns(now, wall_clock())).where(
            c.subscriber_id == subscriber_id, c.key == key
        )
    ).one_or_none()
    return None if row is None or row.ok else _why(row)


def _why_columns(now: datetime, wall: datetime) -> tuple[Any, ...]:
    c = DELIVERIES.c
    return c.status, c.sent_at, c.next_attempt_at, claimable(now, wall).label("ok")


def _why(row: Any) -> Unavailable:
    """Why a row read with _why_columns cannot be claimed (a claimable one was just taken)."""
    if row.ok or row.status == DeliveryStatus.SENDING:
        return Unavailable(DeliveryStatus.SENDING)
    if row.status == DeliveryStatus.DEFERRED:
        return Unavailable(row.status, retry_at=row.next_attempt_at)
    return Unavailable(row.status, sent_at=row.sent_at)


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
