"""The course page's reads: whose page a token opens, and where that reader stands in the course.

Every lesson, reminder and the welcome link to `<base_url>/course/<token>` (README,
"The course page"). The token names the subscriber and carries one HMAC over their
id and address; reading the page changes nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer import keys
from mailer.app import pace, progress
from mailer.content.course import Course
from mailer.keys import Kind
from mailer.store.models import Delivery, DeliveryStatus
from mailer.timing import SendWindow, Windows
from mailer.tokens import Tokens
from subscribers.models import Status, Subscriber


class Opened(enum.Enum):
    """What a course-page token opens."""

    READER = "reader"
    INVALID = "invalid"  # not a token we made, or made for another subscriber or address
    GONE = "gone"  # the subscriber was erased


def open_page(session: Session, tokens: Tokens, token: str) -> tuple[Opened, Subscriber | None]:
    """The subscriber whose course page `token` is, verified against their address."""
    claimed = tokens.course_claim(token)
    if claimed is None:
        return Opened.INVALID, None
    sub = session.get(Subscriber, claimed)
    if sub is None:
        return Opened.GONE, None
    if not tokens.is_course(token, sub.id, sub.email):
        return Opened.INVALID, None
    return Opened.READER, sub


@dataclass(frozen=True)
class Standing:
    """Where a reader stands: what they have read, what comes next and when."""

    status: str
    read: int  # lessons sent in this round of the course
    total: int
    next_week: int | None
    next_title: str | None
    next_at: datetime | None  # in the reader's zone; None while paused or when done
    on_its_way: bool  # due now, inside the window: the next run sends it
    weeks_off_left: int
    window: SendWindow
    zone: str
    time_of_day: str
    reminders: bool  # the course has reminders and the reader wants them


def standing(
    session: Session, sub: Subscriber, course: Course, windows: Windows, now: datetime
) -> Standing:
    """Where `sub` stands at `now` (read only)."""
    read = session.scalar(
        select(func.count()).where(
            Delivery.subscriber_id == sub.id,
            keys.of_kind(Delivery.key, Kind.LESSON),
            Delivery.status == DeliveryStatus.SENT,
        )
    )
    window = windows.of(sub.time_of_day)
    week = sub.next_lesson if sub.status in (Status.ACTIVE, Status.PAUSED) else None
    title = course.lesson(week).title if week and week <= course.total else None
    at, on_its_way = None, False
    if sub.status == Status.ACTIVE and week and sub.next_due_at is not None:
        planned = progress.plan(session, sub, course, windows, now)
        at = next((p.at for p in planned if p.key == keys.lesson(week)), None)
        on_its_way = sub.next_due_at <= now and window.is_open(now, ZoneInfo(sub.timezone))
    return Standing(
        status=sub.status,
        read=int(read or 0),
        total=course.total,
        next_week=week,
        next_title=title,
        next_at=at,
        on_its_way=on_its_way,
        weeks_off_left=pace.MAX_WEEKS_OFF - pace.weeks_off_taken(sub),
        window=window,
        zone=sub.timezone,
        time_of_day=sub.time_of_day,
        reminders=course.reminders and sub.reminders,
    )
