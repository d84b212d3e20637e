"""The delivery ledger and the key-value settings table, on the subscribers' metadata."""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from subscribers.models import Base, UTCDateTime


class DeliveryStatus(enum.StrEnum):
    """The life of one (subscriber, key) message.

    The one meaning of "deferred", shared by `status` (rows in that state) and
    `send --json` (rows a run put in it): the message was tried and the server
    put it off (a 4xx, a timeout, a dropped connection) or the run trying it
    died, and it is tried again from next_attempt_at. A message a run claimed
    but never tried (it stopped first, or no server took mail) goes back as it
    was: queued if never tried, deferred if tried before (see ledger.given_back).
    """

    QUEUED = "queued"  # waiting for its first attempt (notices, broadcasts, handed back untried)
    SENDING = "sending"  # claimed by a run; the SMTP transaction may be under way
    SENT = "sent"
    DEFERRED = "deferred"  # tried and put off (see above); retried after next_attempt_at
    FAILED = "failed"  # given up; never retried unless an operator asks
    CANCELLED = "cancelled"  # no longer wanted (the subscriber left before it went out)


class Delivery(Base):
    """One message to one subscriber; unique per (subscriber, key) so it goes out once."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[str] = mapped_column(String(255))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claim_token: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(40))  # the run holding the claim
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("subscriber_id", "key", name="uq_deliveries_subscriber_key"),
        Index("ix_deliveries_status", "status"),
    )


class Meta(Base):
    """Installation-wide values kept in the database (the generated secret key)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Run(Base):
    """One `send` run (cron or daemon tick), kept so `status` can report the last one."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    clock: Mapped[datetime] = mapped_column(UTCDateTime)  # the schedule's "now" (--now)
    outcome: Mapped[str] = mapped_column(String(16))  # running, ok, unavailable, error
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    deferred: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_runs_started_at", "started_at"),)


class Broadcast(Base):
    """A one-off newsletter: Markdown in the course layout, sent to a segment once."""

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)  # Markdown (with {{ first_name }} etc.)
    segment: Mapped[str] = mapped_column(String(16))  # active, completed or all
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    recipients: Mapped[int] = mapped_column(Integer, default=0)


class RelayUsage(Base):
    """How many messages a relay was given on one UTC day (its daily quota is counted here)."""

    __tablename__ = "relay_usage"

    relay: Mapped[str] = mapped_column(String(255), primary_key=True)  # host:port
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    sent: Mapped[int] = mapped_column(Integer)


class Change(Base):
    """One change to a subscriber's course: who made it (the reader on their course page,
    the operator with the CLI), when, and what (README, "The course page")."""

    __tablename__ = "changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(16))  # reader or operator
    via: Mapped[str] = mapped_column(String(32))  # course page, unsubscribe link, cli
    change: Mapped[str] = mapped_column(String(32))  # week off, pause, time zone, ...
    detail: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_changes_subscriber", "subscriber_id", "id"),)
