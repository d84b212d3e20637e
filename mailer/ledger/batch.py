"""A batch of claims: one token, one lease, renewed while the run works through them.

Every write to a claimed row is fenced by (row, token): a run that lost a
claim (its lease ran out while it was stopped) can neither send the message
nor overwrite what the new owner recorded (docs/guarantees.md).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from mailer.ledger.rules import UNCLAIMED, given_back, wall_clock
from mailer.store.models import Delivery


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
                    status=given_back(),
                    next_attempt_at=None,
                    last_error=reason,
                    updated_at=now,
                    **UNCLAIMED,
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
            .values(claimed_until=wall_clock() + self.lease)
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        ).all()
        session.commit()
        self.held = set(kept)
        self.renewed = started


def new_batch(owner: str | None, lease: timedelta, *, exclusive: bool = False) -> Batch:
    """An empty batch for `owner`'s next claims."""
    return Batch(uuid.uuid4().hex, owner, lease, exclusive)
