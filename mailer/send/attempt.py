"""One delivery attempt: send a claimed message and record in the ledger what the server said."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlalchemy.orm import Session

from mailer.errors import TransportUnavailable
from mailer.ledger import record, settle
from mailer.ledger.record import Advance, FollowUp
from mailer.ledger.rules import Claim, retry_delay
from mailer.send.report import SendReport
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
    from mailer.content.message import Outgoing


@dataclass
class Attempt:
    """A claimed message, when to stop retrying it, and what its outcome changes.

    `message` is the Outgoing itself, or a function that builds it: the pipeline's
    builder threads then build it, off the run's critical path (mailer.send.pipeline).
    """

    claim: Claim
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
    record_results(session, [(attempt, error)], now, report)
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


def record_results(
    session: Session,
    results: Sequence[tuple[Attempt, Exception | None]],
    now: datetime,
    report: SendReport,
) -> None:
    """Write in the ledger what the server said to each attempt (None: it took it); no commit.

    Accepted messages are recorded together (mailer.ledger.record). Unexpected
    errors (a bug, not the server) give their claim back and are raised last.
    """
    accepted = [attempt for attempt, error in results if error is None]
    if len(accepted) < len(results):  # marking sent locks its own subscribers first
        record.lock_subscribers(
            session.connection(), [attempt.subscriber_id for attempt, _ in results]
        )
    if accepted:
        marked = record.record_accepted(
            session.connection(),
            [
                record.Accepted(
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
        settle.release(session, claim, now, str(error))
    elif isinstance(error, Withdrawn):
        settle.release(session, claim, now, error.reply)  # fenced: a no-op if the claim is lost
        report.busy += error.lost_claim
    elif isinstance(error, TemporaryFailure):
        retry_at = now + retry_delay(claim.attempts + 1)
        if retry_at < attempt.give_up_at:
            settle.record_deferred(session, claim, now, error.reply, retry_at)
            report.deferred += 1
        else:
            reply = f"gave up after {claim.attempts + 1} attempts: {error.reply}"
            if settle.record_refused(session, claim, now, reply):
                record.advance(session.connection(), failed_moves, now)
            report.fail(message.recipient, message.key, reply)
    elif isinstance(error, RecipientRefused):
        if settle.record_refused(session, claim, now, error.reply):
            session.execute(
                update(Subscriber)
                .where(
                    Subscriber.id == attempt.subscriber_id,
                    Subscriber.status != Status.COMPLAINED,  # a complaint stays on record
                )
                .values(status=Status.BOUNCED, status_changed_at=now, next_due_at=None)
            )
        report.bounced += 1
        report.fail(message.recipient, message.key, error.reply)
    elif isinstance(error, MessageRefused):
        if settle.record_refused(session, claim, now, error.reply):
            record.advance(session.connection(), failed_moves, now)
        report.fail(message.recipient, message.key, error.reply)
    else:
        settle.release(session, claim, now, f"not sent: {type(error).__name__}")
        return False
    return True
