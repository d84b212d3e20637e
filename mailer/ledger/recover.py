"""Handing back the claims of runs that died or overran their lease (docs/guarantees.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, and_, or_, update
from sqlalchemy.orm import Session

from mailer.ledger.rules import UNCLAIMED, wall_clock
from mailer.store.models import Delivery, DeliveryStatus

INTERRUPTED = "interrupted: the run sending it stopped before the server's reply was recorded"


def recover(session: Session, alive: set[str] | None, now: datetime) -> int:
    """Hand back claims whose lease has ended or whose run is dead; commits; returns how many.

    `alive` names the runs still running (None: no run knows of the others, so
    only leases count). A message handed back is sent again by whichever run
    claims it next, with the same Message-ID; if the dead run's server had
    already accepted it, that is RFC 1047's one unavoidable duplicate.
    """
    wall = wall_clock()
    orphaned: Any = Delivery.claimed_until <= wall
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
            next_attempt_at=None,
            last_error=INTERRUPTED,
            **UNCLAIMED,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    assert isinstance(result, CursorResult)
    return result.rowcount
