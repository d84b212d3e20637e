"""`send_due`: deliver every message that is due now: queued notices first, then lessons."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailer.errors import TransportUnavailable
from mailer.ledger.rules import ready_notice
from mailer.send.batches import send_source
from mailer.send.context import Sending
from mailer.send.lessons import Lessons
from mailer.send.notices import Notices
from mailer.send.report import SendReport
from mailer.store.models import Delivery
from subscribers.models import Status, Subscriber


def count_due(session: Session, now: datetime) -> int:
    """How many messages are due (for progress bars)."""
    lessons = session.scalar(
        select(func.count())
        .select_from(Subscriber)
        .where(Subscriber.status == Status.ACTIVE, Subscriber.next_due_at <= now)
    )
    waiting = session.scalar(select(func.count()).select_from(Delivery).where(ready_notice(now)))
    return int(lessons or 0) + int(waiting or 0)


def send_due(run: Sending) -> SendReport:
    """Send what is due: queued notices first, then each due subscriber's next lesson.

    At most one lesson per subscriber per run. The run's stop flag is asked
    before each message; when it says yes the run ends there (a graceful
    shutdown), and the claims it holds but has not used are given back.
    Raises TransportUnavailable (after recording what was done) when the server
    or outbox cannot take mail; the report so far is attached as `.report`.
    """
    try:
        if send_source(run, Notices()):
            send_source(run, Lessons())
    except TransportUnavailable as exc:
        exc.report = run.report  # type: ignore[attr-defined]
        raise
    return run.report
