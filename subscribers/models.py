"""SQLAlchemy models of the subscriber store and the time type they share."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Index, Integer, String, func, true
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores them naive, in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base; `mailer` adds its tables to the same metadata."""


class Status(enum.StrEnum):
    """Where a subscriber stands in the course."""

    PENDING = "pending"  # waiting for double opt-in confirmation
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"  # marked our mail as spam (a feedback-loop report): no more mail


class Subscriber(Base):
    """A person on the course, with consent record and scheduling cursor."""

    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    # Consent record (GDPR art. 7): how and when the person agreed.
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Scheduling cursor: when the course began, and which lesson is due when.
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_lesson: Mapped[int | None] = mapped_column(Integer)
    next_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Which time through the course this is (restart and jump back start a new round).
    course_round: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # Mid-week practice reminders, unless the subscriber asked not to have them.
    reminders: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # The reader's pace: morning (send_window) or evening (evening_window), and the weeks
    # off taken for lesson `weeks_off_lesson` (at most four per lesson).
    time_of_day: Mapped[str] = mapped_column(
        String(16), default="morning", server_default="morning"
    )
    weeks_off: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    weeks_off_lesson: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("uq_subscribers_email", func.lower(email), unique=True),
        Index("ix_subscribers_due", status, next_due_at, id),
    )

    def __repr__(self) -> str:
        return f"<Subscriber {self.id} {self.email!r} {self.status}>"
