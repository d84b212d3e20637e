"""The complaint rate: readers who marked our mail as spam, against readers we mailed.

Counted over the last WINDOW (30 days), as mailbox providers count it (README,
"Complaints"): the complaints are the feedback-loop reports `inbound` recorded in
subscribers' histories in that time; the readers mailed are those sent at least
one message in that time, and every complainant (someone mailed before the window
who complains now counts as mailed, so the rate never exceeds 1). A subscriber
restored by `import` with status `complained` is no new complaint: the import
writes no such history entry. `status` shows the rate; `doctor` warns above WARN_AT.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, union
from sqlalchemy.orm import Session

from mailer.app import history
from mailer.store.models import Change, Delivery, DeliveryStatus

WINDOW_DAYS = 30
WINDOW = timedelta(days=WINDOW_DAYS)
GMAIL_LIMIT = 0.003  # Gmail's bulk-sender line: 0.3 % of mail reported as spam
WARN_AT = 0.001  # where to start worrying (Gmail asks senders to stay below 0.1 %)


@dataclass(frozen=True)
class ComplaintRate:
    """Complaints and readers mailed over the window from `since` to `until`."""

    complaints: int
    mailed: int
    since: datetime | None = None
    until: datetime | None = None

    @property
    def rate(self) -> float:
        """Complaints per reader mailed (0.0 when nobody was mailed)."""
        return self.complaints / self.mailed if self.mailed else 0.0


def complaint_rate(session: Session, now: datetime, window: timedelta = WINDOW) -> ComplaintRate:
    """Readers who complained in the `window` up to `now`, and readers mailed in it."""
    since = now - window
    complained = select(Change.subscriber_id).where(
        Change.change == history.COMPLAINT, Change.at > since, Change.at <= now
    )
    sent = select(Delivery.subscriber_id).where(
        Delivery.status == DeliveryStatus.SENT,
        Delivery.sent_at > since,
        Delivery.sent_at <= now,
    )
    complaints = session.scalar(select(func.count()).select_from(complained.distinct().subquery()))
    mailed = session.scalar(select(func.count()).select_from(union(sent, complained).subquery()))
    return ComplaintRate(complaints or 0, mailed or 0, since, now)
