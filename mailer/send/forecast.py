"""What a `send` run would deliver at an instant, by message key: the forecast `status` shows.

It follows the run's own rules without claiming, rendering or writing anything:
a lesson goes when its subscriber's cursor says it is due, their send window
is open and its ledger row (if any) may be claimed (`rules.claimable`); a
queued message (a confirmation, a welcome, a reminder, a broadcast) goes when
it is ready (`rules.ready_notice`), inside the subscriber's own window (their time of
day) if its kind needs one
(`MessageKey.windowed`), unless its subscriber may no longer have it
(`notices.refusal`: the run would cancel it). Everything else due within the
next 24 hours, or due but waiting for a window or a retry time, is "later".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from mailer import keys
from mailer.keys import MessageKey
from mailer.ledger.rules import (
    DELIVERIES,
    claimable,
    due_at,
    ready_notice,
    waiting_notice,
    wall_clock,
)
from mailer.send import notices
from mailer.store.models import Delivery, DeliveryStatus
from subscribers.models import Status, Subscriber

if TYPE_CHECKING:
    from mailer.content.course import Course
    from mailer.timing import Windows

HORIZON = timedelta(hours=24)
NOW, LATER = "now", "next_24h"


@dataclass(frozen=True)
class _Reader:
    """What `notices.refusal` asks of a subscriber, from one group of the forecast's query."""

    status: str
    reminders: bool
    next_lesson: int | None
    next_due_at: datetime | None


def due(
    session: Session, now: datetime, windows: Windows, course: Course
) -> dict[str, dict[str, int]]:
    """For each key, how many messages a run at `now` sends ("now") and how many go out
    later within the next 24 hours ("next_24h")."""
    found: dict[str, dict[str, int]] = {}

    def count(key: str, bucket: str, n: int) -> None:
        found.setdefault(key, {NOW: 0, LATER: 0})[bucket] += n

    for key, bucket, n in _lessons(session, now, windows, course):
        count(key, bucket, n)
    for key, bucket, n in _queued(session, now, windows, course):
        count(key, bucket, n)
    return found


def _lessons(
    session: Session, now: datetime, windows: Windows, course: Course
) -> list[tuple[str, str, int]]:
    """Course lessons from the subscribers' cursors, grouped by zone, time of day, key and
    what blocks them."""
    cursor = func.coalesce(Subscriber.next_lesson, 1)
    week = case((cursor > course.total, course.total), else_=cursor)
    key = keys.lesson_sql(week)
    c = DELIVERIES.c
    # The lesson's ledger row when it may not be claimed now (at most one per key).
    blocking = (
        select(c.status)
        .where(
            c.subscriber_id == Subscriber.id,
            c.key == key,
            ~claimable(now, wall_clock()),
        )
        .scalar_subquery()
    )
    each = (
        select(
            Subscriber.timezone.label("zone"),
            Subscriber.time_of_day.label("time_of_day"),
            key.label("key"),
            case((Subscriber.next_due_at <= now, 1), else_=0).label("due_now"),
            blocking.label("blocked"),
        )
        .where(Subscriber.status == Status.ACTIVE, Subscriber.next_due_at <= now + HORIZON)
        .subquery()
    )
    groups = (each.c.zone, each.c.time_of_day, each.c.key, each.c.due_now, each.c.blocked)
    rows = session.execute(select(*groups, func.count()).group_by(*groups)).all()
    out = []
    for zone, time_of_day, lesson, due_now, blocked, n in rows:
        if blocked is None:
            ready = bool(due_now) and windows.of(time_of_day).is_open(now, ZoneInfo(zone))
            out.append((lesson, NOW if ready else LATER, n))
        elif blocked == DeliveryStatus.DEFERRED:
            out.append((lesson, LATER, n))  # tried and put off: retried after its backoff
        # sent or failed (the run moves the cursor on), or being sent by another run: not due
    return out


def _queued(
    session: Session, now: datetime, windows: Windows, course: Course
) -> list[tuple[str, str, int]]:
    """Queued messages ready by the horizon, grouped by what decides whether and when they go."""
    at = due_at()
    ready = case((ready_notice(now), 1), else_=0)
    lesson_due = case((Subscriber.next_due_at <= now, 1), else_=0)
    groups: list[Any] = [
        Subscriber.timezone,
        Subscriber.time_of_day,
        Delivery.key,
        ready,
        Subscriber.status,
        Subscriber.reminders,
        Subscriber.next_lesson,
        lesson_due,
    ]
    rows = session.execute(
        select(*groups, func.count())
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(waiting_notice(), at <= now + HORIZON)
        .group_by(*groups)
    ).all()
    out = []
    for row in rows:
        zone, time_of_day, key, is_ready, status, reminders, next_lesson, lesson_is_due, n = tuple(
            row
        )
        reader = _Reader(status, bool(reminders), next_lesson, now if lesson_is_due else None)
        if notices.refusal(key, reader, course, now) is not None:
            continue  # the run cancels it instead of sending it
        goes = bool(is_ready) and (
            not MessageKey.parse(key).windowed
            or windows.of(time_of_day).is_open(now, ZoneInfo(zone))
        )
        out.append((key, NOW if goes else LATER, n))
    return out


def next_due(session: Session, now: datetime) -> datetime | None:
    """The earliest time after `now` at which a lesson or a queued message falls due."""
    lesson = session.scalar(
        select(func.min(Subscriber.next_due_at)).where(
            Subscriber.status == Status.ACTIVE, Subscriber.next_due_at > now
        )
    )
    at = due_at()
    waiting = session.scalar(select(func.min(at)).where(waiting_notice(), at > now))
    return min((t for t in (lesson, waiting) if t is not None), default=None)
