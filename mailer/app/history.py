"""Each subscriber's course history: who changed what, and when (README, "The course page")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.store.models import Change
from subscribers.models import Subscriber


@dataclass(frozen=True)
class Actor:
    """Who made a change, and through which front-end."""

    by: str  # reader or operator
    via: str  # course page, unsubscribe link, cli


READER = Actor("reader", "course page")
LINK = Actor("reader", "unsubscribe link")
EMAIL = Actor("reader", "email")  # a message to the list address (inbound)
SIGNUP = Actor("reader", "sign-up")  # the form or a `subscribe` email
FEEDBACK_LOOP = Actor("reader", "feedback loop")  # "this is spam", reported by their provider
OPERATOR = Actor("operator", "cli")
COMPLAINT = "complaint"  # the change a proved feedback report records (mailer.reports.complaints)


def record(
    session: Session, sub: Subscriber, actor: Actor, change: str, detail: str, now: datetime
) -> None:
    """Add one change to the subscriber's history; no commit."""
    session.add(
        Change(
            subscriber_id=sub.id,
            at=now,
            actor=actor.by,
            via=actor.via,
            change=change,
            detail=detail,
        )
    )


def entries(session: Session, subscriber_id: int, zone: str | None = None) -> list[dict[str, Any]]:
    """The subscriber's history, oldest first, times in `zone` (ISO-8601 with offset)."""
    tz = ZoneInfo(zone) if zone else None
    return [
        {
            "at": (row.at.astimezone(tz) if tz else row.at).isoformat(),
            "by": row.actor,
            "via": row.via,
            "change": row.change,
            "detail": row.detail,
        }
        for row in session.scalars(
            select(Change).where(Change.subscriber_id == subscriber_id).order_by(Change.id)
        )
    ]


def local(instant: datetime, zone: str) -> str:
    """An instant as a history line names it: 'Tue 2026-05-19 09:00 Europe/London'."""
    return f"{instant.astimezone(ZoneInfo(zone)):%a %Y-%m-%d %H:%M} {zone}"
