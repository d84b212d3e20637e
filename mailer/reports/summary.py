"""Read-only views for people and machines: subscriber lists, one subscriber, overall status."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer import keys
from mailer.app import history
from mailer.app.enrolment import find_subscriber
from mailer.keys import Kind, MessageKey
from mailer.reports.complaints import GMAIL_LIMIT, WINDOW_DAYS, complaint_rate
from mailer.store.models import Delivery, DeliveryStatus, Run
from subscribers.models import Status, Subscriber

if TYPE_CHECKING:
    from mailer.content.course import Course
    from mailer.timing import Windows

RECENT_FAILURES = 10


def iso(value: datetime | None, zone: str | None = None) -> str | None:
    """ISO-8601 with offset, in the subscriber's zone when given."""
    if value is None:
        return None
    return (value.astimezone(ZoneInfo(zone)) if zone else value).isoformat()


def _lessons_sent() -> Any:
    return (
        select(Delivery.subscriber_id, func.count().label("n"))
        .where(keys.of_kind(Delivery.key, Kind.LESSON), Delivery.status == DeliveryStatus.SENT)
        .group_by(Delivery.subscriber_id)
        .subquery()
    )


def _view(sub: Any, lessons_sent: int) -> dict[str, Any]:
    scheduled = sub.status == Status.ACTIVE and sub.next_due_at is not None
    waiting = sub.status in (Status.ACTIVE, Status.PAUSED, Status.PENDING)
    return {
        "email": sub.email,
        "name": sub.name,
        "timezone": sub.timezone,
        "time_of_day": sub.time_of_day,
        "reminders": bool(sub.reminders),
        "status": sub.status,
        "lessons_sent": lessons_sent,
        "next_lesson": sub.next_lesson if waiting else None,
        "next_due": iso(sub.next_due_at, sub.timezone) if scheduled else None,
        "source": sub.source,
        "created_at": iso(sub.created_at),
        "started_at": iso(sub.started_at),
        "confirmed_at": iso(sub.confirmed_at),
        "status_changed_at": iso(sub.status_changed_at),
    }


def subscriber_rows(session: Session, status: str | None = None) -> Iterator[dict[str, Any]]:
    """Every subscriber (optionally of one status) as a dict, in the order they joined."""
    sent = _lessons_sent()
    query = (
        select(Subscriber, func.coalesce(sent.c.n, 0))
        .outerjoin(sent, sent.c.subscriber_id == Subscriber.id)
        .order_by(Subscriber.id)
    )
    if status:
        query = query.where(Subscriber.status == status)
    for sub, count in session.execute(query).yield_per(1000):
        yield _view(sub, int(count))


def subscriber_detail(session: Session, email: str) -> dict[str, Any]:
    """One subscriber with their delivery history and the history of their course."""
    sub = find_subscriber(session, email)
    rows = session.scalars(
        select(Delivery).where(Delivery.subscriber_id == sub.id).order_by(Delivery.id)
    ).all()
    sent = sum(1 for d in rows if _is_lesson(d.key) and d.status == DeliveryStatus.SENT)
    view = _view(sub, sent)
    view["deliveries"] = [
        {
            "key": d.key,
            "status": d.status,
            "due_at": iso(d.due_at, sub.timezone),
            "sent_at": iso(d.sent_at, sub.timezone),
            "attempts": d.attempts,
            "next_attempt_at": iso(d.next_attempt_at, sub.timezone),
            "last_error": d.last_error,
            "message_id": d.message_id,
        }
        for d in rows
    ]
    view["history"] = history.entries(session, sub.id, sub.timezone)
    return view


def status_summary(
    session: Session, now: datetime, windows: Windows, course: Course
) -> dict[str, Any]:
    """Subscribers by status, deliveries by key and ledger state, what a run at `now` would
    send and what falls due in the next 24 hours (mailer.forecast), the last run, recent
    failures, and the complaint rate of the last 30 days (mailer.reports.complaints)."""
    by_status = {s.value: 0 for s in Status}
    for status, count in session.execute(
        select(Subscriber.status, func.count()).group_by(Subscriber.status)
    ):
        by_status[status] = count
    deliveries: dict[str, dict[str, int]] = {}
    for key, status, count in session.execute(
        select(Delivery.key, Delivery.status, func.count()).group_by(Delivery.key, Delivery.status)
    ):
        deliveries.setdefault(key, {s.value: 0 for s in DeliveryStatus})[status] = count
    from mailer.send import forecast

    due = forecast.due(session, now, windows, course)
    failures = session.execute(
        select(
            Subscriber.email,
            Delivery.key,
            Delivery.status,
            Delivery.last_error,
            Delivery.updated_at,
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.status.in_((DeliveryStatus.FAILED, DeliveryStatus.DEFERRED)))
        .order_by(Delivery.updated_at.desc(), Delivery.id.desc())
        .limit(RECENT_FAILURES)
    ).all()
    run = session.scalar(select(Run).order_by(Run.id.desc()).limit(1))
    rate = complaint_rate(session, now)
    return {
        "now": iso(now),
        "last_run": None
        if run is None
        else {
            "started_at": iso(run.started_at),
            "finished_at": iso(run.finished_at),
            "clock": iso(run.clock),
            "outcome": run.outcome,
            "sent": run.sent,
            "failed": run.failed,
            "deferred": run.deferred,
            "message": run.message,
        },
        "subscribers": by_status,
        "total_subscribers": sum(by_status.values()),
        "deliveries": dict(sorted(deliveries.items(), key=lambda kv: key_order(kv[0]))),
        "due": dict(sorted(due.items(), key=lambda kv: key_order(kv[0]))),
        "due_now": sum(counts[forecast.NOW] for counts in due.values()),
        "next_due": iso(forecast.next_due(session, now)),
        "recent_failures": [
            {"email": email, "key": key, "status": status, "reply": error, "at": iso(at)}
            for email, key, status, error, at in failures
        ],
        "complaints": {
            "days": WINDOW_DAYS,
            "complaints": rate.complaints,
            "mailed": rate.mailed,
            "rate": rate.rate,
            "gmail_limit": GMAIL_LIMIT,
        },
    }


def key_order(key: str) -> tuple[str, int]:
    """Sort keys naturally: lesson-2 before lesson-10."""
    return keys.sort_key(key)


def _is_lesson(key: str) -> bool:
    found = MessageKey.read(key)
    return found is not None and found.kind == Kind.LESSON and found.round is None
