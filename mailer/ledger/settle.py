"""Settling one claimed row: refused, put off, handed back or cancelled (fenced by its claim).

Each write lands only while the run still holds the claim (its token is on
the row); a run that lost the claim writes nothing (docs/guarantees.md).
Messages the server took are recorded in bulk by mailer.ledger.record.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CursorResult, update
from sqlalchemy.orm import Session

from mailer.ledger.rules import UNCLAIMED, Claim, given_back
from mailer.store.models import Delivery, DeliveryStatus


def record_refused(session: Session, claim: Claim, now: datetime, reply: str) -> bool:
    """Record a permanent failure (a 5xx, or given up); no commit. False: claim lost."""
    return _settle(
        session,
        claim,
        status=DeliveryStatus.FAILED,
        attempts=claim.attempts + 1,
        last_error=reply,
        next_attempt_at=None,
        updated_at=now,
    )


def record_deferred(
    session: Session, claim: Claim, now: datetime, reply: str, retry_at: datetime
) -> bool:
    """Record a transient failure; the message is tried again at `retry_at`; no commit."""
    return _settle(
        session,
        claim,
        status=DeliveryStatus.DEFERRED,
        attempts=claim.attempts + 1,
        last_error=reply,
        next_attempt_at=retry_at,
        updated_at=now,
    )


def release(session: Session, claim: Claim, now: datetime, reason: str) -> bool:
    """Give the claim back without counting an attempt (the message never left); no commit."""
    return _settle(
        session,
        claim,
        status=given_back(),
        last_error=reason,
        next_attempt_at=None,
        updated_at=now,
    )


def cancel(session: Session, claim: Claim, now: datetime, reason: str) -> bool:
    """The message is no longer wanted (its subscriber may not have it); no commit."""
    return _settle(
        session, claim, status=DeliveryStatus.CANCELLED, last_error=reason, updated_at=now
    )


def _settle(session: Session, claim: Claim, **values: object) -> bool:
    """Write the outcome if this run still holds the claim (lease fencing); no commit."""
    result = session.execute(
        update(Delivery)
        .where(Delivery.id == claim.delivery_id, Delivery.claim_token == claim.token)
        .values(**UNCLAIMED, **values)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1
