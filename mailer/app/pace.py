"""The reader's pace: one service per control, shared by the course page and the operator's CLI.

A week off, a pause and its resume, the next letter now, another time zone or
time of day, reminders on or off, leaving. Each one changes the subscriber's
course cursor (never the ledger's sent rows: nothing is sent twice or skipped),
records who did it in the history, and commits (docs/scheduling.md, "The
reader's pace"; README, "The course page").
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer import keys
from mailer.app import history
from mailer.app.enrolment import earliest_next_lesson, find_subscriber
from mailer.app.enrolment import leave as unsubscribe
from mailer.app.history import Actor
from mailer.errors import Conflict, InvalidInput
from mailer.keys import Kind
from mailer.ledger import queue
from mailer.store.models import Delivery, DeliveryStatus
from mailer.timing import TimeOfDay, Windows, moved_due, resumed_due, week_later
from subscribers.models import Status, Subscriber
from subscribers.validation import check_timezone

MAX_WEEKS_OFF = 4  # per letter: at most four weeks later than it would have come
Who = Subscriber | str  # the subscriber (the course page found them) or their address (CLI)


class Refused(Conflict):
    """A control that cannot be used now; `reader` says why in the reader's own words."""

    def __init__(self, operator: str, reader: str) -> None:
        super().__init__(operator)
        self.reader = reader


def week_off(session: Session, who: Who, now: datetime, actor: Actor, weeks: int = 1) -> Subscriber:
    """The next lesson comes `weeks` weeks later (the same local time, 7 local days each);
    at most MAX_WEEKS_OFF per lesson. The subscriber stays active."""
    sub = find(session, who)
    _must_be_active(sub, "take a week off")
    assert sub.next_lesson is not None and sub.next_due_at is not None
    taken = weeks_off_taken(sub)
    if taken + weeks > MAX_WEEKS_OFF:
        left = MAX_WEEKS_OFF - taken
        raise Refused(
            f"{sub.email}: lesson {sub.next_lesson} has {taken} week(s) off already; "
            f"{left} more at most (a letter moves at most {MAX_WEEKS_OFF} weeks)",
            f"Letter {sub.next_lesson} has already moved {taken} weeks on: a letter can move "
            f"at most {MAX_WEEKS_OFF} weeks. You can pause the course instead.",
        )
    _not_in_flight(session, sub)
    sub.next_due_at = week_later(sub.next_due_at, ZoneInfo(sub.timezone), weeks)
    sub.weeks_off, sub.weeks_off_lesson = taken + weeks, sub.next_lesson
    what = "a week" if weeks == 1 else f"{weeks} weeks"
    detail = f"lesson {sub.next_lesson} moves {what} on, to {_due(sub)}"
    return _done(session, sub, actor, "week off", detail, now)


def weeks_off_taken(sub: Subscriber) -> int:
    """The weeks off already taken for the subscriber's next lesson."""
    return sub.weeks_off if sub.weeks_off_lesson == sub.next_lesson else 0


def pause(session: Session, who: Who, now: datetime, actor: Actor) -> Subscriber:
    """Stop course mail (and reminders) until `resume`."""
    sub = find(session, who)
    _must_be_active(sub, "pause")
    sub.status = Status.PAUSED
    sub.status_changed_at = now
    return _done(session, sub, actor, "pause", f"paused before lesson {sub.next_lesson}", now)


def resume(session: Session, who: Who, now: datetime, windows: Windows, actor: Actor) -> Subscriber:
    """Continue a paused subscriber (the operator: a bounced one too): the next lesson at
    their next window, never sooner than a week after the last (docs/scheduling.md, rule 5)."""
    sub = find(session, who)
    allowed = (Status.PAUSED, Status.BOUNCED) if actor == history.OPERATOR else (Status.PAUSED,)
    if sub.status not in allowed:
        raise Refused(
            f"{sub.email} is {sub.status}: only paused or bounced subscribers resume",
            "Your course is not paused, so there is nothing to resume.",
        )
    window, zone = windows.of(sub.time_of_day), ZoneInfo(sub.timezone)
    earliest = earliest_next_lesson(session, sub, window)
    if sub.status == Status.BOUNCED and sub.next_lesson:
        # The operator vouches the address works again: retry the lesson that bounced.
        queue.retry_lesson(session, sub.id, sub.next_lesson, now)
    sub.status = Status.ACTIVE
    sub.status_changed_at = now
    sub.next_lesson = sub.next_lesson or 1
    sub.next_due_at = resumed_due(earliest, now, window, zone)
    sub.weeks_off = 0
    detail = f"lesson {sub.next_lesson} due {_due(sub)}"
    return _done(session, sub, actor, "resume", detail, now)


def next_now(session: Session, who: Who, now: datetime, actor: Actor) -> Subscriber:
    """The next lesson is due at once: the next run inside the window sends it, and the
    course goes on a week after it."""
    sub = find(session, who)
    _must_be_active(sub, "ask for the next letter")
    assert sub.next_due_at is not None
    _not_in_flight(session, sub)
    if sub.next_due_at > now:
        sub.next_due_at = now
    sub.weeks_off = 0
    detail = f"lesson {sub.next_lesson} due now, at the next run inside the window"
    return _done(session, sub, actor, "next letter now", detail, now)


def set_when(
    session: Session,
    who: Who,
    now: datetime,
    windows: Windows,
    actor: Actor,
    *,
    zone: str | None = None,
    time_of_day: str | None = None,
) -> Subscriber:
    """Letters come in another time zone and/or at another time of day (morning: the
    `send_window`; evening: the `evening_window`), from the next one on, which keeps its
    local date; nothing already sent goes again and nothing is skipped."""
    sub = find(session, who)
    new_zone = check_timezone(zone) if zone is not None else sub.timezone
    try:
        chosen = TimeOfDay(time_of_day or sub.time_of_day)
    except ValueError:
        raise InvalidInput(f"time of day {time_of_day!r}: choose morning or evening") from None
    changes = []
    if new_zone != sub.timezone:
        changes.append(("time zone", f"{sub.timezone} -> {new_zone}"))
    if chosen != sub.time_of_day:
        changes.append(("time of day", f"{sub.time_of_day} -> {chosen} ({windows.of(chosen)})"))
    if not changes:
        return sub
    _move(session, sub, new_zone, chosen, now, windows)
    for change, detail in changes:
        history.record(session, sub, actor, change, detail + _next(sub), now)
    session.commit()
    return sub


def set_reminders(session: Session, who: Who, on: bool, now: datetime, actor: Actor) -> Subscriber:
    """Mid-week reminders on or off for one subscriber (off cancels those queued)."""
    sub = find(session, who)
    if sub.reminders == on:
        return sub
    sub.reminders = on
    if not on:
        queue.cancel_waiting(session, sub.id, now, "replaced", kind=Kind.REMINDER)
    return _done(session, sub, actor, "reminders", "on" if on else "off", now)


def leave(session: Session, who: Who, now: datetime, actor: Actor) -> Subscriber:
    """Unsubscribe: no more mail of any kind; the record is kept."""
    sub = find(session, who)
    if sub.status == Status.UNSUBSCRIBED:
        raise Refused(f"{sub.email} is already unsubscribed", "You have already left the course.")
    if sub.status == Status.COMPLAINED:
        # Already gets nothing; `complained` must stay on record (README, "Complaints").
        raise Refused(
            f"{sub.email} complained (marked our mail as spam) and already gets nothing",
            "You have already left the course.",
        )
    unsubscribe(session, sub, now)
    return _done(session, sub, actor, "unsubscribe", f"left (was {_was(sub)})", now)


def _move(
    session: Session, sub: Subscriber, zone: str, time_of_day: str, now: datetime, windows: Windows
) -> None:
    """A new zone or time of day: the next lesson and each queued reminder keep their local
    date and move to the start of the new window in the new zone (due at once if passed)."""
    old_zone, new_zone = ZoneInfo(sub.timezone), ZoneInfo(zone)
    window = windows.of(time_of_day)
    if sub.status == Status.ACTIVE and sub.next_due_at is not None:
        _not_in_flight(session, sub)
        sub.next_due_at = moved_due(sub.next_due_at, old_zone, window, new_zone, now)
    waiting = session.execute(
        select(Delivery.id, Delivery.due_at).where(
            Delivery.subscriber_id == sub.id,
            keys.of_kind(Delivery.key, Kind.REMINDER),
            Delivery.status == DeliveryStatus.QUEUED,
        )
    ).all()
    moves = {row.id: moved_due(row.due_at, old_zone, window, new_zone, now) for row in waiting}
    queue.reschedule(session, moves, now)
    sub.timezone, sub.time_of_day = zone, time_of_day


def find(session: Session, who: Who) -> Subscriber:
    """The subscriber `who` names: found by address, or the one the course page found."""
    return find_subscriber(session, who) if isinstance(who, str) else who


def _must_be_active(sub: Subscriber, what: str) -> None:
    if sub.status != Status.ACTIVE or sub.next_due_at is None or sub.next_lesson is None:
        raise Refused(
            f"{sub.email} is {sub.status}, not active: only active subscribers can {what}",
            f"You can {what} only while your course is under way; it is {_was(sub)}.",
        )


def _not_in_flight(session: Session, sub: Subscriber) -> None:
    """Refuse while the next lesson is being sent: the send would undo the change."""
    assert sub.next_lesson is not None
    sending = session.scalar(
        select(Delivery.id).where(
            Delivery.subscriber_id == sub.id,
            Delivery.key == keys.lesson(sub.next_lesson),
            Delivery.status == DeliveryStatus.SENDING,
        )
    )
    if sending is not None:
        raise Refused(
            f"lesson {sub.next_lesson} to {sub.email} is being sent right now; try again shortly",
            f"Letter {sub.next_lesson} is on its way to you right now. Please try again in a "
            "few minutes.",
        )


def _done(
    session: Session, sub: Subscriber, actor: Actor, change: str, detail: str, now: datetime
) -> Subscriber:
    history.record(session, sub, actor, change, detail, now)
    session.commit()
    return sub


def _due(sub: Subscriber) -> str:
    assert sub.next_due_at is not None
    return history.local(sub.next_due_at, sub.timezone)


def _next(sub: Subscriber) -> str:
    if sub.status != Status.ACTIVE or sub.next_due_at is None:
        return ""
    return f"; lesson {sub.next_lesson} due {_due(sub)}"


def _was(sub: Subscriber) -> str:
    return "not confirmed yet" if sub.status == Status.PENDING else str(sub.status)
