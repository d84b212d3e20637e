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

import math
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import CursorResult, and_, bindparam, or_, select, text, tuple_, update
from sqlalchemy.orm import Session

from mailer.ledger import rows as ledger
from mailer.ledger.record import DELIVERIES
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
)
INTERRUPTED = "interrupted: the run sending it stopped before the server's reply was recorded"


@dataclass
class Batch:
    """Claims taken together: one token, one lease, renewed while the run works through them."""

    token: str
    owner: str | None
    lease: timedelta
    exclusive: bool = False  # no other run can be alive (SQLite's run lock): claims can't be lost
    held: set[int] = field(default_factory=set)
    renewed: float = field(default_factory=time.monotonic)

    def hold(self, session: Session, delivery_id: int) -> float | None:
        """Until when (monotonic clock) the run surely holds this claim; None if it lost it.

        Asked right before the message goes to the server. The lease is renewed
        once a third of it has passed on this process's own monotonic clock, so a
        run that was stopped (SIGSTOP, a VM pause) past its lease finds out here
        that its claims went to another run. The answer is good for half a lease:
        a message whose final dot would come later is withdrawn (see pipeline).
        """
        if delivery_id not in self.held:
            return None
        if time.monotonic() - self.renewed > self.lease.total_seconds() / 3:
            self._renew(session)
        if delivery_id not in self.held:
            return None
        if self.exclusive:
            return math.inf
        return self.renewed + self.lease.total_seconds() / 2

    def done(self, delivery_id: int) -> None:
        """The message's outcome is recorded; the claim is spent."""
        self.held.discard(delivery_id)

    def release_rest(self, session: Session, now: datetime, reason: str) -> None:
        """Give back the claims not used (the run stopped early); commits."""
        if self.held:
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(self.held), Delivery.claim_token == self.token)
                .values(
                    status=ledger.given_back(),
                    claim_token=None,
                    claimed_until=None,
                    claimed_by=None,
                    next_attempt_at=None,
                    last_error=reason,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            session.commit()
            self.held.clear()

    def _renew(self, session: Session) -> None:
        started = time.monotonic()
        kept = session.scalars(
            update(Delivery)
            .where(Delivery.id.in_(self.held), Delivery.claim_token == self.token)
            .values(claimed_until=ledger.wall_clock() + self.lease)
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        ).all()
        session.commit()
        self.held = set(kept)
        self.renewed = started


def new_batch(owner: str | None, lease: timedelta, *, exclusive: bool = False) -> Batch:
    """An empty batch for `owner`'s next claims."""
    return Batch(uuid.uuid4().hex, owner, lease, exclusive)


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


def claimable(now: datetime, wall: datetime) -> Any:
    """A ledger row that may be claimed now (mirrors ledger.blocked)."""
    c = DELIVERIES.c
    return or_(
        c.status.in_((DeliveryStatus.QUEUED, DeliveryStatus.CANCELLED)),
        and_(
            c.status == DeliveryStatus.DEFERRED,
            or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
        ),
        and_(
            c.status == DeliveryStatus.SENDING,
            or_(c.claimed_until.is_(None), c.claimed_until <= wall),
        ),
    )


def claim_lessons(
    session: Session,
    batch: Batch,
    wanted: Iterable[tuple[int, str, str, datetime]],
    now: datetime,
) -> dict[int, ledger.Claim | ledger.Unavailable]:
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
    wall = ledger.wall_clock()
    connection = session.connection()
    shared = {
        "b_token": batch.token,
        "b_until": wall + batch.lease,
        "b_owner": batch.owner,
        "b_now": now,
    }
    got: dict[int, ledger.Claim | ledger.Unavailable] = {}

    def take(result: Any) -> None:
        for row in result:
            got[row.subscriber_id] = ledger.Claim(row.id, batch.token, row.attempts, row.due_at)
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
            for row in session.scalars(
                select(Delivery).where(tuple_(Delivery.subscriber_id, Delivery.key).in_(missing))
            ):
                got[row.subscriber_id] = ledger.blocked(row, now) or ledger.Unavailable(
                    DeliveryStatus.SENDING
                )
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


def ready_queued(
    session: Session, ready: Any, after: int | None, limit: int, *, lock: bool = True
) -> Sequence[Any]:
    """The next `limit` queued rows that are ready, by id; locked on PostgreSQL (SKIP LOCKED)."""
    query = (
        select(Delivery.id, Delivery.key, Delivery.subscriber_id, Subscriber.timezone)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(ready)
        .order_by(Delivery.id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(Delivery.id > after)
    if lock and _is_postgres(session):
        query = query.with_for_update(skip_locked=True, of=Delivery)
    return session.execute(query).all()


def claim_rows(
    session: Session, batch: Batch, ids: Sequence[int], ready: Any, now: datetime
) -> dict[int, ledger.Claim]:
    """Claim the queued rows `ids` that are still ready; commits."""
    got: dict[int, ledger.Claim] = {}
    if ids:
        result = session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), ready)
            .values(
                status=DeliveryStatus.SENDING,
                claim_token=batch.token,
                claimed_until=ledger.wall_clock() + batch.lease,
                claimed_by=batch.owner,
                updated_at=now,
            )
            .returning(Delivery.id, Delivery.attempts, Delivery.due_at)
            .execution_options(synchronize_session=False)
        )
        for row in result:
            got[row.id] = ledger.Claim(row.id, batch.token, row.attempts, row.due_at)
            batch.held.add(row.id)
    session.commit()
    batch.renewed = time.monotonic()
    return got


def recover(session: Session, alive: set[str] | None, now: datetime) -> int:
    """Hand back claims whose lease has ended or whose run is dead; commits; returns how many.

    `alive` names the runs still running (None: no run knows of the others, so
    only leases count). A message handed back is sent again by whichever run
    claims it next, with the same Message-ID; if the dead run's server had
    already accepted it, that is RFC 1047's one unavoidable duplicate.
    """
    wall = ledger.wall_clock()
    orphaned = Delivery.claimed_until <= wall
    if alive is not None:
        orphaned = or_(
            orphaned,
            and_(Delivery.claimed_by.is_not(None), Delivery.claimed_by.not_in(alive)),
        )
    result = session.execute(
        update(Delivery)
        .where(Delivery.status == DeliveryStatus.SENDING, orphaned)
        .values(
            status=DeliveryStatus.DEFERRED,
            attempts=Delivery.attempts + 1,
            claim_token=None,
            claimed_until=None,
            claimed_by=None,
            next_attempt_at=None,
            last_error=INTERRUPTED,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    assert isinstance(result, CursorResult)
    return result.rowcount


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
