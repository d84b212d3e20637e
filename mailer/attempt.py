"""One delivery attempt: send a claimed message and record in the ledger what the server said."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from mailer import ledger
from mailer.compose import Composer
from mailer.errors import TransportUnavailable
from mailer.message import Outgoing
from mailer.timing import SendWindow
from mailer.transport import MessageRefused, RecipientRefused, TemporaryFailure, Transport
from subscribers.models import Status, Subscriber


@dataclass
class SendReport:
    """What one run did; `deferred` are transient failures to be retried later."""

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
        }

    def fail(self, email: str, key: str, reply: str) -> None:
        """Count a message given up for good."""
        self.failed += 1
        self.failures.append({"email": email, "key": key, "reply": reply})


class Pacer:
    """Keeps a run under `rate` messages per second (0: no limit)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0

    def wait(self) -> None:
        """Sleep until the next message may go."""
        if not self.interval:
            return
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
            now = self._next
        self._next = max(now, self._next) + self.interval


@dataclass
class Sending:
    """One run's sending state, handed to each phase: where, what, when, and how fast."""

    session: Session
    transport: Transport
    composer: Composer
    window: SendWindow
    now: datetime
    report: SendReport
    pacer: Pacer
    owner: str | None = None  # names this run's claims (see runlock)
    lease: timedelta = ledger.LEASE
    stop: Callable[[], bool] | None = None
    progress: Callable[[int], None] | None = None

    def stopping(self) -> bool:
        """True once a graceful stop was asked for."""
        return bool(self.stop and self.stop())

    def step(self) -> None:
        """One unit of work done (for the progress bar)."""
        if self.progress:
            self.progress(1)


def _nothing() -> None:
    return None


@dataclass
class Attempt:
    """A claimed message, when to stop retrying it, and what its outcome changes."""

    claim: ledger.Claim
    subscriber_id: int
    message: Outgoing
    give_up_at: datetime
    after_sent: Callable[[], None] = _nothing  # e.g. move the course cursor on
    after_failed: Callable[[], None] = _nothing  # e.g. keep the weekly rhythm


def deliver(
    session: Session, transport: Transport, attempt: Attempt, now: datetime, report: SendReport
) -> None:
    """Send one claimed message and record the outcome (committed).

    Raises TransportUnavailable, with the claim given back, when nothing can be sent now.
    """
    claim, message = attempt.claim, attempt.message
    try:
        transport.send(message)
    except TransportUnavailable as exc:
        ledger.release(session, claim, now, str(exc))
        session.commit()
        raise
    except TemporaryFailure as exc:
        retry_at = now + ledger.retry_delay(claim.attempts + 1)
        if retry_at < attempt.give_up_at:
            ledger.mark_deferred(session, claim, now, exc.reply, retry_at)
            report.deferred += 1
        else:
            reply = f"gave up after {claim.attempts + 1} attempts: {exc.reply}"
            if ledger.mark_failed(session, claim, now, reply):
                attempt.after_failed()
            report.fail(message.recipient, message.key, reply)
    except RecipientRefused as exc:
        if ledger.mark_failed(session, claim, now, exc.reply):
            session.execute(
                update(Subscriber)
                .where(Subscriber.id == attempt.subscriber_id)
                .values(status=Status.BOUNCED, status_changed_at=now, next_due_at=None)
            )
        report.bounced += 1
        report.fail(message.recipient, message.key, exc.reply)
    except MessageRefused as exc:
        if ledger.mark_failed(session, claim, now, exc.reply):
            attempt.after_failed()
        report.fail(message.recipient, message.key, exc.reply)
    else:
        if ledger.mark_sent(session, claim, now):
            attempt.after_sent()
            report.sent += 1
    session.commit()
