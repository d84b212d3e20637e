"""A subscriber's place in the course: start again, jump to a lesson, what lies ahead."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer import keys
from mailer.app import history
from mailer.app.enrolment import earliest_next_lesson, find_subscriber
from mailer.content.course import Course
from mailer.errors import Conflict
from mailer.keys import Kind
from mailer.ledger import queue
from mailer.ledger.rules import WAITING
from mailer.store.models import Delivery
from mailer.timing import Windows, next_lesson_due, resumed_due
from subscribers.models import Status, Subscriber

# Subscribers whose course can be changed by the operator.
ON_COURSE = (Status.ACTIVE, Status.PAUSED, Status.COMPLETED)


def restart(session: Session, email: str, now: datetime, windows: Windows) -> Subscriber:
    """Start the course again from lesson 1 at the next window (a week after the last
    lesson at the earliest); earlier deliveries stay in the history; commits."""
    sub = _on_course(session, email)
    window = windows.of(sub.time_of_day)
    earliest = earliest_next_lesson(session, sub, window)
    _archive(session, sub, from_week=1, now=now)
    sub.status = Status.ACTIVE
    sub.status_changed_at = now
    sub.started_at = now
    sub.next_lesson = 1
    sub.next_due_at = resumed_due(earliest, now, window, ZoneInfo(sub.timezone))
    sub.weeks_off = 0
    detail = f"lesson 1 due {history.local(sub.next_due_at, sub.timezone)}"
    history.record(session, sub, history.OPERATOR, "restart", detail, now)
    session.commit()
    return sub


def jump(
    session: Session, email: str, week: int, course: Course, now: datetime, windows: Windows
) -> Subscriber:
    """Make lesson `week` the subscriber's next one; commits.

    Going back (or repeating a lesson) starts a new round for the lessons from
    `week` on, so they go out again with new Message-IDs. The lesson is due at
    the next window, never sooner than a week after the last lesson sent.
    """
    course.lesson(week)
    sub = _on_course(session, email)
    window = windows.of(sub.time_of_day)
    earliest = earliest_next_lesson(session, sub, window)
    done = session.scalar(
        select(func.count())
        .select_from(Delivery)
        .where(
            Delivery.subscriber_id == sub.id,
            Delivery.key.in_([keys.lesson(w) for w in range(week, course.total + 1)]),
        )
    )
    if done:
        _archive(session, sub, from_week=week, now=now)
    else:
        queue.cancel_waiting(session, sub.id, now, "replaced", kind=Kind.REMINDER)
    if sub.status == Status.COMPLETED:
        sub.status = Status.ACTIVE
        sub.status_changed_at = now
    sub.next_lesson = week
    sub.next_due_at = resumed_due(earliest, now, window, ZoneInfo(sub.timezone))
    sub.weeks_off = 0
    detail = f"lesson {week} due {history.local(sub.next_due_at, sub.timezone)}"
    history.record(session, sub, history.OPERATOR, "jump", detail, now)
    session.commit()
    return sub


@dataclass(frozen=True)
class Planned:
    """One message the subscriber will get if nothing changes."""

    key: str
    at: datetime  # in the subscriber's zone


def timeline(
    session: Session, email: str, course: Course, windows: Windows, now: datetime
) -> tuple[Subscriber, list[Planned]]:
    """When each remaining lesson and reminder will reach `email`, if every run is on time."""
    sub = find_subscriber(session, email)
    return sub, plan(session, sub, course, windows, now)


def plan(
    session: Session, sub: Subscriber, course: Course, windows: Windows, now: datetime
) -> list[Planned]:
    """When each remaining lesson and reminder will go out, if every run is on time, in the
    subscriber's own zone and window (their time of day).

    A paused subscriber's plan is the one `resume` would give them now.
    """
    zone, window = ZoneInfo(sub.timezone), windows.of(sub.time_of_day)
    if sub.status not in (Status.ACTIVE, Status.PAUSED, Status.COMPLETED):
        return []
    reminders = course.reminders and sub.reminders
    planned = [
        Planned(key, (due if due > now else now).astimezone(zone))
        for key, due in session.execute(
            select(Delivery.key, func.coalesce(Delivery.next_attempt_at, Delivery.due_at)).where(
                Delivery.subscriber_id == sub.id,
                keys.of_kind(Delivery.key, Kind.REMINDER),
                Delivery.status.in_(WAITING),
            )
        )
        if reminders
    ]
    if sub.status == Status.COMPLETED or sub.next_lesson is None:
        return sorted(planned, key=lambda p: p.at)  # lesson 6's nudge may still be due
    if sub.status == Status.PAUSED or sub.next_due_at is None:
        due = resumed_due(earliest_next_lesson(session, sub, window), now, window, zone)
    else:
        due = sub.next_due_at
    for week in range(sub.next_lesson, course.total + 1):
        if due <= now:  # due (or overdue): the next run inside the window sends it
            due = now if window.is_open(now, zone) else window.next_opening(now, zone)
        lesson = course.lesson(week)
        planned.append(Planned(lesson.key, due.astimezone(zone)))
        if reminders and lesson.reminder:
            nudge_day = due.astimezone(zone).date() + timedelta(days=course.reminder_after_days)
            nudge = window.opens_on(nudge_day, zone).astimezone(zone)
            planned.append(Planned(lesson.reminder_key, nudge))
        due = next_lesson_due(due, window, zone)
    return sorted(planned, key=lambda p: p.at)


def _on_course(session: Session, email: str) -> Subscriber:
    sub = find_subscriber(session, email)
    if sub.status not in ON_COURSE:
        raise Conflict(f"{sub.email} is {sub.status}: only people on the course can be moved")
    return sub


def _archive(session: Session, sub: Subscriber, *, from_week: int, now: datetime) -> None:
    """File this round's lessons `from_week`.. (and their reminders) away in the history
    under 'r<round>/<key>', and begin the next round."""
    current = [key for w in range(from_week, 100) for key in (keys.lesson(w), keys.reminder(w))]
    if not queue.archive(session, sub.id, current, sub.course_round, now):
        raise Conflict(f"a message to {sub.email} is being sent right now; try again shortly")
    sub.course_round += 1
    session.flush()
    queue.cancel_waiting(session, sub.id, now, "replaced", kind=Kind.REMINDER)
