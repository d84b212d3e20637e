"""A reader's own data: the copy they download from their course page, and erasing it.

Erasure is the same as `subscribers remove` (GDPR art. 17). The reader who erases
themselves gets one goodbye, sent to the address alone and never written to the
ledger: nothing about them is kept (README, "The course page").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import make_msgid
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from mailer.app import enrolment, pace
from mailer.content.course import ERASED
from mailer.reports import summary as reports
from subscribers.models import Status, Subscriber

if TYPE_CHECKING:
    from mailer.content.compose import Composer
    from mailer.content.message import Outgoing


def personal_data(session: Session, sub: Subscriber, now: datetime) -> dict[str, Any]:
    """Everything kept about `sub`: profile, consent record, course, every delivery, the
    history of changes (times in their zone, ISO-8601 with offset)."""
    view = reports.subscriber_detail(session, sub.email)
    return {
        "exported_at": reports.iso(now, sub.timezone),
        "profile": {k: view[k] for k in ("email", "name", "timezone", "time_of_day")}
        | {"mid_week_reminders": view["reminders"]},
        "consent": {
            "source": sub.source,
            "signed_up_at": view["created_at"],
            "confirmed_at": view["confirmed_at"],
        },
        "course": {
            "status": sub.status,
            "status_changed_at": view["status_changed_at"],
            "started_at": view["started_at"],
            "round": sub.course_round,
            "lessons_sent": view["lessons_sent"],
            "next_lesson": view["next_lesson"],
            "next_due": view["next_due"],
            "weeks_off_for_next_lesson": pace.weeks_off_taken(sub),
        },
        "deliveries": view["deliveries"],
        "history": view["history"],
    }


@dataclass(frozen=True)
class Erased:
    """Who was just erased: only what the goodbye needs, kept in memory until it goes."""

    email: str
    name: str | None
    goodbye: bool = True  # False for a reader who complained: no more mail of any kind


def erase(session: Session, sub: Subscriber) -> Erased | None:
    """Erase `sub` as `subscribers remove` does; commits. None when another request erased
    them first (so the goodbye goes once)."""
    gone = Erased(sub.email, sub.name, goodbye=sub.status != Status.COMPLAINED)
    return gone if enrolment.erase(session, sub) else None


def farewell(composer: Composer, erased: Erased, now: datetime) -> Outgoing:
    """The one email that says the data is gone: to the address alone, with no ledger row
    and no links back (there is nobody left to unsubscribe)."""
    return composer.compose(
        ERASED,
        subscriber_id=None,
        email=erased.email,
        name=erased.name,
        date=now,
        message_id=make_msgid("erased", domain=composer.sender.domain),
    )
