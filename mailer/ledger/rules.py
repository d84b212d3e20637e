"""The ledger's rules: how a delivery row lives, who moves it and when, what is asked of it.

Every message is one row per (subscriber, key) under a unique constraint
(docs/guarantees.md). A row moves only along TRANSITIONS, and only through
the functions of this package; each question the rest of the code asks of
the ledger ("may this row be claimed now?", "is this queued message ready?")
is answered by one SQL expression here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, case, func, or_

from mailer import keys
from mailer.keys import Kind
from mailer.store.models import Delivery, DeliveryStatus

S = DeliveryStatus
DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]
# A claim outlives the longest SMTP transaction (10 minutes for the final dot).
LEASE = timedelta(minutes=15)
FIRST_RETRY = timedelta(minutes=5)
MAX_RETRY = timedelta(hours=4)

# (from, to) -> the function that makes the move, and when. None: the row does not exist yet.
TRANSITIONS: dict[tuple[S | None, S], str] = {
    (None, S.QUEUED): "queue.enqueue / enqueue_many / record.record_accepted (a reminder)",
    (None, S.SENDING): "claims.claim_lessons: a lesson's first attempt is born claimed",
    (S.QUEUED, S.SENDING): "claims.claim_*: a run takes it (SKIP LOCKED on PostgreSQL)",
    (S.DEFERRED, S.SENDING): "claims.claim_*: its retry time has come",
    (S.CANCELLED, S.SENDING): "claims.claim_lessons: a lesson wanted again (after a jump)",
    (S.SENDING, S.SENDING): "claims.claim_*: the holder's lease ran out",
    (S.SENDING, S.SENT): "record.record_accepted: the server said 250 (fenced by the claim token)",
    (
        S.SENDING,
        S.DEFERRED,
    ): "settle.record_deferred: a 4xx, a dropped connection; recover: run died",
    (S.SENDING, S.FAILED): "settle.record_refused: a 5xx, or given up before the next lesson",
    (S.SENDING, S.QUEUED): "settle.release / Batch.release_rest: handed back untried",
    (S.SENDING, S.CANCELLED): "settle.cancel: the subscriber may no longer have it",
    (S.QUEUED, S.CANCELLED): "queue.cancel_waiting: the subscriber left, or the plan changed",
    (S.DEFERRED, S.CANCELLED): "queue.cancel_waiting",
    (S.FAILED, S.QUEUED): "queue.enqueue (asked for again) / queue.requeue (operator retry)",
    (S.CANCELLED, S.QUEUED): "queue.enqueue / record.record_accepted (a reminder queued again)",
    (S.SENT, S.QUEUED): "queue.enqueue: a confirmation asked for again a day later",
    (S.FAILED, S.DEFERRED): "queue.requeue: a failed lesson retried by its subscriber's course",
}
WAITING = (S.QUEUED, S.DEFERRED)  # rows that will be tried when their time comes


def wall_clock() -> datetime:
    """The real time: leases are about processes, not about the schedule's `now`."""
    return datetime.now(UTC)


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff after `attempts` failed tries: 5 min, 15 min, 45 min, ... 4 h."""
    return min(FIRST_RETRY * 3 ** max(attempts - 1, 0), MAX_RETRY)


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


def claimable(now: datetime, wall: datetime) -> ColumnElement[bool]:
    """A row a run may claim now: waiting and due, cancelled (a lesson wanted again), or
    claimed by a run whose lease has run out."""
    c = DELIVERIES.c
    return or_(
        c.status.in_((S.QUEUED, S.CANCELLED)),
        and_(c.status == S.DEFERRED, or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now)),
        and_(c.status == S.SENDING, or_(c.claimed_until.is_(None), c.claimed_until <= wall)),
    )


def due_at() -> Any:
    """When a waiting row is next tried: its retry time, else when it fell due."""
    return func.coalesce(Delivery.next_attempt_at, Delivery.due_at)


def waiting_notice() -> ColumnElement[bool]:
    """A queued or deferred message that is not a lesson (lessons follow the course cursor)."""
    return and_(Delivery.status.in_(WAITING), keys.not_of_kind(Delivery.key, Kind.LESSON))


def ready_notice(now: datetime) -> ColumnElement[bool]:
    """A waiting message (not a lesson) whose time has come."""
    return and_(
        waiting_notice(),
        or_(
            Delivery.next_attempt_at <= now,
            and_(Delivery.next_attempt_at.is_(None), Delivery.due_at <= now),
        ),
    )


def given_back() -> Any:
    """The state of a claimed message handed back untried: queued if it was never tried,
    deferred if it was (it keeps waiting for its next try). Not a new deferral."""
    return case((Delivery.attempts == 0, S.QUEUED), else_=S.DEFERRED)


# The values that end a claim: every write that settles a row clears them.
UNCLAIMED = {"claim_token": None, "claimed_until": None, "claimed_by": None}
