"""One delivery attempt: send a claimed message and record in the ledger what the server said."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import update
from sqlalchemy.orm import Session

from mailer.errors import TransportUnavailable
from mailer.ledger import record as outcomes
from mailer.ledger import rows as ledger
from mailer.ledger.record import Advance, FollowUp
from mailer.transport.base import (
    DeliveryError,
    MessageRefused,
    RecipientRefused,
    TemporaryFailure,
    Transport,
    Withdrawn,
)
from subscribers.models import Status, Subscriber

if TYPE_CHECKING:
    from mailer.content.compose import Composer
    from mailer.content.message import Outgoing
    from mailer.timing import SendWindow


@dataclass
class SendReport:
    """What one run did.

    `deferred`: messages this run tried that the server put off, now in the
    ledger state of that name (mailer.models.DeliveryStatus); what the run
    claimed but never tried goes back untouched and is not counted.
    """

    sent: int = 0
    failed: int = 0
    deferred: int = 0
    bounced: int = 0
    waiting: int = 0  # due, but outside the subscriber's send window or before a retry time
    busy: int = 0  # claimed by another run that is still sending
    recovered: int = 0  # claims of a run that died or overran its lease, handed back
    dry_run: bool = False
    skipped: str | None = None  # why nothing was tried (another run holds the SQLite lock)
    failures: list[dict[str, str]] = field(default_factory=list)
    sent_by_key: dict[str, int] = field(default_factory=dict)  # what `status` predicts as due

    def count_sent(self, key: str) -> None:
        """One message of `key` sent (or, in a dry run, that would be)."""
        self.sent += 1
        self.sent_by_key[key] = self.sent_by_key.get(key, 0) + 1

    def summary(self) -> str:
        """One line for people and cron mail."""
        if self.skipped:
            return f"nothing sent: {self.skipped}"
        verb = "would send" if self.dry_run else "sent"
        parts = [f"{verb} {self.sent}", f"failed {self.failed}", f"deferred {self.deferred}"]
        if self.bounced:
            parts.append(f"bounced {self.bounced}")
        if self.waiting:
            parts.append(f"waiting {self.waiting}")
        if self.busy:
            parts.append(f"busy {self.busy}")
        if self.recovered:
            parts.append(f"recovered {self.recovered}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, object]:
        """The --json object."""
        return {
            "sent": self.sent,
            "failed": self.failed,
            "deferred": self.deferred,
            "bounced": self.bounced,
            "waiting": self.waiting,
            "busy": self.busy,
            "recovered": self.recovered,
            "dry_run": self.dry_run,
            "skipped": self.skipped,
            "failures": self.failures,
            "sent_by_key": dict(sorted(self.sent_by_key.items())),
        }

    def fail(self, email: str, key: str, reply: str) -> None:
        """Count a message given up for good."""
        self.failed += 1
        self.failures.append({"email": email, "key": key, "reply": reply})


class Pacer:
    """Keeps a run (or a relay's connections) under `rate` messages per second (0: no limit).

    Safe to share between threads: each caller gets its own slot in time.
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Sleep until the next message may go."""
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


class Outlet(Protocol):
    """Sends attempts and records their outcome (mailer.pipeline.Pipeline)."""

    def submit(
        self, attempt: Attempt, done: Callable[[], None], held: Callable[[], float | None]
    ) -> bool:
        """Send `attempt` while `held()` says the claim holds; `done` once recorded; False: stop."""

    def drain(self) -> None:
        """Wait until every submitted attempt is recorded; raise TransportUnavailable if seen."""

    def settle(self) -> None:
        """Like drain, without raising (for clean-up after another error)."""


@dataclass
class Sending:
    """One run's sending state, handed to each phase: where, what, when, and how fast."""

    session: Session
    outlet: Outlet  # where claimed messages go to be sent (mailer.pipeline)
    make_composer: Callable[[], Composer]  # called once, when the first message is due
    window: SendWindow
    now: datetime
    report: SendReport
    pacer: Pacer
    owner: str | None = None  # names this run's claims (see runlock)
    lease: timedelta = ledger.LEASE
    exclusive: bool = False  # this run's lock keeps every other send run out (SQLite)
    stop: Callable[[], bool] | None = None
    progress: Callable[[int], None] | None = None

    @cached_property
    def composer(self) -> Composer:
        """The run's composer, built on first use."""
        return self.make_composer()

    def stopping(self) -> bool:
        """True once a graceful stop was asked for."""
        return bool(self.stop and self.stop())

    def step(self) -> None:
        """One unit of work done (for the progress bar)."""
        if self.progress:
            self.progress(1)


@dataclass
class Attempt:
    """A claimed message, when to stop retrying it, and what its outcome changes.

    `message` is the Outgoing itself, or a function that builds it: a sender
    thread then builds it, off the run's critical path.
    """

    claim: ledger.Claim
    subscriber_id: int
    message: Outgoing | Callable[[], Outgoing]
    give_up_at: datetime
    on_sent: Advance | None = None  # move the course cursor on
    follow_up: FollowUp | None = None  # queue this once it is sent (a reminder)
    on_failed: Advance | None = None  # keep the weekly rhythm when given up

    def outgoing(self) -> Outgoing:
        """The message, built on first use."""
        if callable(self.message):
            self.message = self.message()
        return self.message


def deliver(
    session: Session, transport: Transport, attempt: Attempt, now: datetime, report: SendReport
) -> None:
    """Send one claimed message and record the outcome (committed).

    Raises TransportUnavailable, with the claim given back, when nothing can be sent now.
    """
    error = send_one(transport, attempt.outgoing())
    record(session, [(attempt, error)], now, report)
    session.commit()
    if isinstance(error, TransportUnavailable):
        raise error


def send_one(
    transport: Transport, message: Outgoing, gate: Callable[[], None] | None = None
) -> Exception | None:
    """Hand `message` to the transport; the error that says why not, or None on success."""
    try:
        transport.send(message, gate)
    except (DeliveryError, TransportUnavailable) as exc:
        return exc
    return None


def record(
    session: Session,
    results: Sequence[tuple[Attempt, Exception | None]],
    now: datetime,
    report: SendReport,
) -> None:
    """Write in the ledger what the server said to each attempt (None: it took it); no commit.

    Accepted messages are recorded together (see mailer.outcomes). Unexpected
    errors (a bug, not the server) give their claim back and are raised last.
    """
    accepted = [attempt for attempt, error in results if error is None]
    if len(accepted) < len(results):  # marking sent locks its own subscribers first
        outcomes.lock_subscribers(
            session.connection(), [attempt.subscriber_id for attempt, _ in results]
        )
    if accepted:
        marked = outcomes.accept(
            session.connection(),
            [
                outcomes.Accepted(
                    a.claim.delivery_id, a.claim.token, a.subscriber_id, a.on_sent, a.follow_up
                )
                for a in accepted
            ],
            now,
        )
        for attempt in accepted:
            if attempt.claim.delivery_id in marked:
                report.count_sent(attempt.outgoing().key)
    unexpected: Exception | None = None
    for attempt, error in results:
        if error is not None and not _record_error(session, attempt, error, now, report):
            unexpected = unexpected or error
    if unexpected is not None:
        session.commit()
        raise unexpected


def _record_error(
    session: Session, attempt: Attempt, error: Exception, now: datetime, report: SendReport
) -> bool:
    """Record a refusal or a transient failure; False for an error no server gives."""
    claim, message = attempt.claim, attempt.outgoing()
    failed_moves = [attempt.on_failed] if attempt.on_failed else []
    if isinstance(error, TransportUnavailable):
        ledger.release(session, claim, now, str(error))
    elif isinstance(error, Withdrawn):
        ledger.release(session, claim, now, error.reply)  # fenced: a no-op if the claim is lost
        report.busy += error.lost_claim
    elif isinstance(error, TemporaryFailure):
        retry_at = now + ledger.retry_delay(claim.attempts + 1)
        if retry_at < attempt.give_up_at:
            ledger.mark_deferred(session, claim, now, error.reply, retry_at)
            report.deferred += 1
        else:
            reply = f"gave up after {claim.attempts + 1} attempts: {error.reply}"
            if ledger.mark_failed(session, claim, now, reply):
                outcomes.advance(session.connection(), failed_moves, now)
            report.fail(message.recipient, message.key, reply)
    elif isinstance(error, RecipientRefused):
        if ledger.mark_failed(session, claim, now, error.reply):
            session.execute(
                update(Subscriber)
                .where(Subscriber.id == attempt.subscriber_id)
                .values(status=Status.BOUNCED, status_changed_at=now, next_due_at=None)
            )
        report.bounced += 1
        report.fail(message.recipient, message.key, error.reply)
    elif isinstance(error, MessageRefused):
        if ledger.mark_failed(session, claim, now, error.reply):
            outcomes.advance(session.connection(), failed_moves, now)
        report.fail(message.recipient, message.key, error.reply)
    else:
        ledger.release(session, claim, now, f"not sent: {type(error).__name__}")
        return False
    return True
