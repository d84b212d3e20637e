"""The delivery ledger: claim a (subscriber, key) before sending, record the outcome after."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, and_, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from mailer.store.models import Delivery, DeliveryStatus

# A claim outlives the longest SMTP transaction (10 minutes for the final dot).
LEASE = timedelta(minutes=15)
FIRST_RETRY = timedelta(minutes=5)
MAX_RETRY = timedelta(hours=4)


def wall_clock() -> datetime:
    """The real time: leases are about processes, not about the schedule's `now`."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Claim:
    """This run owns the delivery until the lease ends; every write is fenced by `token`."""

    delivery_id: int
    token: str
    attempts: int
    due_at: datetime


@dataclass(frozen=True)
class Unavailable:
    """Why a delivery could not be claimed now."""

    status: str
    sent_at: datetime | None = None
    retry_at: datetime | None = None


def claim(
    session: Session,
    subscriber_id: int,
    key: str,
    message_id: str,
    due_at: datetime,
    now: datetime,
) -> Claim | Unavailable:
    """Claim (subscriber, key) for sending, creating its ledger row on first use; commits."""
    token = uuid.uuid4().hex
    lease = wall_clock() + LEASE
    row = Delivery(
        subscriber_id=subscriber_id,
        key=key,
        status=DeliveryStatus.SENDING,
        message_id=message_id,
        due_at=due_at,
        attempts=0,
        claim_token=token,
        claimed_until=lease,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(row)
        session.commit()
        return Claim(row.id, token, 0, due_at)
    except IntegrityError:
        session.rollback()
    existing = _row(session, subscriber_id, key)
    assert existing is not None
    why = blocked(existing, now)
    if why is not None:
        return why
    status = existing.status
    taken = _rowcount(
        session,
        update(Delivery)
        .where(
            Delivery.id == existing.id,
            Delivery.status == status,
            (Delivery.claim_token == existing.claim_token)
            if existing.claim_token
            else Delivery.claim_token.is_(None),
        )
        .values(
            status=DeliveryStatus.SENDING, claim_token=token, claimed_until=lease, updated_at=now
        )
        .execution_options(synchronize_session=False),
    )
    session.commit()
    if taken != 1:
        return Unavailable(DeliveryStatus.SENDING)
    return Claim(existing.id, token, existing.attempts, existing.due_at)


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
    if existing.status in (DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED):
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
            claim_token=None,
            claimed_until=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False),
    )
    return existing.id if changed == 1 else None


def claim_row(session: Session, delivery_id: int, now: datetime) -> Claim | None:
    """Claim a queued or deferred row that is ready at `now` (or abandoned); commits."""
    token = uuid.uuid4().hex
    wall = wall_clock()
    ready = or_(
        and_(
            Delivery.status.in_((DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED)),
            func.coalesce(Delivery.next_attempt_at, Delivery.due_at) <= now,
        ),
        and_(Delivery.status == DeliveryStatus.SENDING, Delivery.claimed_until <= wall),
    )
    taken = _rowcount(
        session,
        update(Delivery)
        .where(Delivery.id == delivery_id, ready)
        .values(
            status=DeliveryStatus.SENDING,
            claim_token=token,
            claimed_until=wall + LEASE,
            updated_at=now,
        )
        .execution_options(synchronize_session=False),
    )
    session.commit()
    if taken != 1:
        return None
    row = session.get(Delivery, delivery_id, populate_existing=True)
    assert row is not None
    return Claim(row.id, token, row.attempts, row.due_at)


def cancel(session: Session, claim: Claim, now: datetime, reason: str) -> bool:
    """The message is no longer wanted; no commit."""
    return _settle(
        session, claim, status=DeliveryStatus.CANCELLED, last_error=reason, updated_at=now
    )


def peek(session: Session, subscriber_id: int, key: str, now: datetime) -> Unavailable | None:
    """What `claim` would answer, without writing: None when the key could be claimed now."""
    existing = _row(session, subscriber_id, key)
    return None if existing is None else blocked(existing, now)


def _row(session: Session, subscriber_id: int, key: str) -> Delivery | None:
    return session.execute(
        select(Delivery).where(Delivery.subscriber_id == subscriber_id, Delivery.key == key)
    ).scalar_one_or_none()


def blocked(existing: Delivery, now: datetime) -> Unavailable | None:
    """Why an existing ledger row cannot be claimed now (None: it can)."""
    status = existing.status
    if status in (DeliveryStatus.SENT, DeliveryStatus.FAILED):
        return Unavailable(status, sent_at=existing.sent_at)
    if (
        status == DeliveryStatus.DEFERRED
        and existing.next_attempt_at
        and existing.next_attempt_at > now
    ):
        return Unavailable(status, retry_at=existing.next_attempt_at)
    if (
        status == DeliveryStatus.SENDING
        and existing.claimed_until
        and existing.claimed_until > wall_clock()
    ):
        return Unavailable(status)
    return None


def _settle(session: Session, claim: Claim, **values: object) -> bool:
    """Write the outcome if this run still holds the claim (lease fencing); no commit."""
    statement = (
        update(Delivery)
        .where(Delivery.id == claim.delivery_id, Delivery.claim_token == claim.token)
        .values(claim_token=None, claimed_until=None, claimed_by=None, **values)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(session, statement) == 1


def _rowcount(session: Session, statement: Update) -> int:
    result = session.execute(statement)
    assert isinstance(result, CursorResult)
    return result.rowcount


def mark_sent(session: Session, claim: Claim, now: datetime) -> bool:
    """Record a 250 from the server; the caller commits together with the schedule change."""
    return _settle(
        session,
        claim,
        status=DeliveryStatus.SENT,
        sent_at=now,
        attempts=claim.attempts + 1,
        last_error=None,
        next_attempt_at=None,
        updated_at=now,
    )


def mark_failed(session: Session, claim: Claim, now: datetime, reply: str) -> bool:
    """Record a permanent failure (given up, or a 5xx)."""
    return _settle(
        session,
        claim,
        status=DeliveryStatus.FAILED,
        attempts=claim.attempts + 1,
        last_error=reply,
        next_attempt_at=None,
        updated_at=now,
    )


def mark_deferred(
    session: Session, claim: Claim, now: datetime, reply: str, retry_at: datetime
) -> bool:
    """Record a transient failure; the message is retried at `retry_at`."""
    return _settle(
        session,
        claim,
        status=DeliveryStatus.DEFERRED,
        attempts=claim.attempts + 1,
        last_error=reply,
        next_attempt_at=retry_at,
        updated_at=now,
    )


def given_back() -> Any:
    """The state of a claimed message handed back untried: queued if it was never tried,
    deferred if it was (it keeps waiting for its next try). Not a new deferral."""
    return case((Delivery.attempts == 0, DeliveryStatus.QUEUED), else_=DeliveryStatus.DEFERRED)


def release(session: Session, claim: Claim, now: datetime, reason: str) -> bool:
    """Give the claim back without counting an attempt (the message never left)."""
    return _settle(
        session,
        claim,
        status=given_back(),
        last_error=reason,
        next_attempt_at=None,
        updated_at=now,
    )


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff after `attempts` failed tries: 5 min, 15 min, 45 min, ... 4 h."""
    return min(FIRST_RETRY * 3 ** max(attempts - 1, 0), MAX_RETRY)
