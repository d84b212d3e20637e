"""The complaint rate: readers who marked our mail as spam, against readers we mailed.

Counted over the last WINDOW (30 days), as mailbox providers count it: the
complaints are the feedback-loop reports `inbound` recorded in subscribers'
histories in that time, the readers mailed those with at least one message
sent in that time (README, "Complaints"). A subscriber restored by `import`
with status `complained` is no new complaint: it has no such history entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from mailer.app import history
from mailer.store.models import Change, Delivery, DeliveryStatus

WINDOW_DAYS = 30
WINDOW = timedelta(days=WINDOW_DAYS)
GMAIL_LIMIT = 0.003  # Gmail's bulk-sender line: 0.3 % of mail reported as spam
WARN_AT = 0.001  # where to start worrying (Gmail asks senders to stay below 0.1 %)


@dataclass(frozen=True)
class ComplaintRate:
    """Complaints and readers mailed over the last 30 days; `rate` is their ratio."""

    complaints: int
    mailed: int

    @property
    def rate(self) -> float:
        """Complaints per reader mailed (0.0 when nobody was mailed)."""
        return self.complaints / self.mailed if self.mailed else 0.0


def complaint_rate(session: Session, now: datetime) -> ComplaintRate:
    """Readers who complained in the 30 days up to `now`, and readers sent at least one
    message in those days."""
    since = now - WINDOW
    complaints = session.scalar(
        select(func.count(distinct(Change.subscriber_id))).where(
            Change.change == history.COMPLAINT, Change.at > since, Change.at <= now
        )
    )
    mailed = session.scalar(
        select(func.count(distinct(Delivery.subscriber_id))).where(
            Delivery.status == DeliveryStatus.SENT,
            Delivery.sent_at > since,
            Delivery.sent_at <= now,
        )
    )
    return ComplaintRate(complaints or 0, mailed or 0)
