"""The complaint rate: subscribers who reported our mail as spam, per subscriber mailed.

Over the 30 days before `now` (README, "Getting into the inbox"): those who
became `complained` in the window, divided by everyone sent at least one
message in the window (counting each complainant as mailed, so the rate
never exceeds 1). Gmail's line is 0.3 %; doctor warns above 0.1 %.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.orm import Session

from mailer.store.models import Delivery, DeliveryStatus
from subscribers.models import Status, Subscriber

WINDOW = timedelta(days=30)
WARNING_RATE = 0.001  # 0.1 %: doctor warns above it
GMAIL_RATE = 0.003  # 0.3 %: the rate Gmail's sender guidelines say never to reach


@dataclass(frozen=True)
class ComplaintRate:
    """Complaints and subscribers mailed over the window ending at `until`."""

    complained: int
    mailed: int
    since: datetime
    until: datetime

    @property
    def rate(self) -> float:
        """complained / mailed, 0 when nobody was mailed."""
        return self.complained / self.mailed if self.mailed else 0.0


def complaint_rate(session: Session, now: datetime, window: timedelta = WINDOW) -> ComplaintRate:
    """The complaint rate over the `window` before `now`, in one query."""
    since = now - window
    complained = and_(
        Subscriber.status == Status.COMPLAINED,
        Subscriber.status_changed_at > since,
        Subscriber.status_changed_at <= now,
    )
    mailed = exists().where(
        Delivery.subscriber_id == Subscriber.id,
        Delivery.status == DeliveryStatus.SENT,
        Delivery.sent_at > since,
        Delivery.sent_at <= now,
    )
    total, complaints = session.execute(
        select(func.count(), func.count(case((complained, 1)))).where(or_(complained, mailed))
    ).one()
    return ComplaintRate(int(complaints), int(total), since, now)
