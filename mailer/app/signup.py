"""Self-service membership: double opt-in sign-up, confirmation, and unsubscribing by link."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailer import keys
from mailer.app import history, pace
from mailer.app.enrolment import earliest_next_lesson, find_subscriber, no_way_back
from mailer.errors import Conflict, NotFound, TransportUnavailable
from mailer.ledger import queue
from mailer.send.immediate import deliver_now
from mailer.send.report import SendReport
from mailer.timing import Windows, first_lesson_due, resumed_due
from mailer.tokens import Tokens
from subscribers.models import Status, Subscriber
from subscribers.validation import check_timezone, clean_name, normalize_email

if TYPE_CHECKING:
    from mailer.content.compose import Composer
    from mailer.transport.base import Transport

# However often a form is posted, one address gets one confirmation email a day.
CONFIRM_INTERVAL = timedelta(hours=24)
# (subscriber id, address, key) -> Message-ID, e.g. Composer.message_id.
MessageIds = Callable[[int, str, str], str]
# People who left (or whose mail bounced) may sign up again through double opt-in. A reader
# who complained may not: anyone can post their address, and they get no more mail of any
# kind, not even a confirmation (README, "Complaints": enrolment.no_way_back).
REJOINABLE = (Status.UNSUBSCRIBED, Status.BOUNCED)
# Nobody who already gets nothing is unsubscribed again (a complaint must stay on record).
LEFT = (Status.UNSUBSCRIBED, Status.COMPLAINED)


@dataclass(frozen=True)
class SignupRequest:
    """What the sign-up did: the subscriber, and the confirmation to send now (if any)."""

    subscriber_id: int | None
    confirmation: int | None  # the ledger row of a confirmation waiting to go out
    refused: str | None = None  # why nothing was done, for the operator's log only


def request_subscription(
    session: Session,
    email: str,
    *,
    name: str | None,
    timezone: str,
    now: datetime,
    source: str,
    message_id: MessageIds,
) -> SignupRequest:
    """Start double opt-in for `email`; commits.

    A new address is stored as pending; people who left may come back the same
    way. A confirmation email is queued at most once per CONFIRM_INTERVAL per
    address; subscribers who are already on the course get nothing, and so does
    a reader who complained, who also stays complained (`refused` says why, for
    the operator). The caller must answer the same either way, so nobody learns
    who is subscribed.
    Raises InvalidInput for a bad address, name or time zone.
    """
    address = normalize_email(email)
    name = clean_name(name)
    zone = check_timezone(timezone)
    try:
        return _request(session, address, name, zone, now, source, message_id)
    except IntegrityError:
        # The same address posted twice at the same moment: the other request won.
        session.rollback()
        return _request(session, address, name, zone, now, source, message_id)


def _request(
    session: Session,
    address: str,
    name: str | None,
    zone: str,
    now: datetime,
    source: str,
    message_id: MessageIds,
) -> SignupRequest:
    sub = session.scalar(select(Subscriber).where(func.lower(Subscriber.email) == address.lower()))
    if sub is None:
        sub = Subscriber(
            email=address,
            name=name,
            timezone=zone,
            status=Status.PENDING,
            source=source,
            created_at=now,
            status_changed_at=now,
        )
        session.add(sub)
        session.flush()
    elif (refused := no_way_back(sub)) is not None:
        session.rollback()
        return SignupRequest(sub.id, None, refused)
    elif sub.status in REJOINABLE:
        sub.status = Status.PENDING
        sub.status_changed_at = now
        sub.source = source
        sub.name = name or sub.name
        sub.timezone = zone
    elif sub.status != Status.PENDING:
        session.rollback()
        return SignupRequest(sub.id, None)
    queued = queue.enqueue(
        session,
        sub.id,
        keys.CONFIRM,
        message_id(sub.id, sub.email, keys.CONFIRM),
        now,
        now,
        resend_if_sent_before=now - CONFIRM_INTERVAL,
    )
    session.commit()
    return SignupRequest(sub.id, queued)


class Confirmation(enum.StrEnum):
    """What a confirmation link did."""

    CONFIRMED = "confirmed"  # pending -> active, just now
    ALREADY = "already"  # the link was used before; nothing changed
    INVALID = "invalid"  # forged, expired, or for someone no longer pending
    PENDING = "pending"  # a genuine link not used yet (only check_confirmation says this)


@dataclass(frozen=True)
class ConfirmResult:
    """The outcome of a confirmation link, and the welcome to send now (if any)."""

    outcome: Confirmation
    welcome: int | None = None
    first_lesson_due: datetime | None = None
    timezone: str | None = None


def confirm_subscription(
    session: Session,
    tokens: Tokens,
    token: str,
    *,
    now: datetime,
    windows: Windows,
    message_id: MessageIds,
) -> ConfirmResult:
    """Activate the pending subscriber a confirmation token names; commits.

    The course starts at that instant (lesson 1 at their next send window); a
    subscriber coming back continues where they left off, never sooner than a
    week after their last lesson. A welcome email is queued the first time.
    """
    sub, verdict = _confirm_target(session, tokens, token)
    if sub is None or verdict is not None:
        return verdict or ConfirmResult(Confirmation.INVALID)
    zone, window = ZoneInfo(sub.timezone), windows.of(sub.time_of_day)
    sub.status = Status.ACTIVE
    sub.status_changed_at = now
    sub.confirmed_at = now
    if sub.started_at is None:
        sub.started_at = now
        sub.next_lesson = 1
        sub.next_due_at = first_lesson_due(now, window, zone)
    elif sub.next_lesson is not None:
        earliest = earliest_next_lesson(session, sub, window)
        sub.next_due_at = resumed_due(earliest, now, window, zone)
    welcome = queue.enqueue(
        session, sub.id, keys.WELCOME, message_id(sub.id, sub.email, keys.WELCOME), now, now
    )
    session.commit()
    return ConfirmResult(Confirmation.CONFIRMED, welcome, sub.next_due_at, sub.timezone)


def check_confirmation(session: Session, tokens: Tokens, token: str) -> ConfirmResult:
    """What `confirm_subscription` would do with `token`, changing nothing (PENDING: confirm it)."""
    sub, verdict = _confirm_target(session, tokens, token)
    session.rollback()
    if verdict is not None:
        return verdict
    assert sub is not None
    return ConfirmResult(Confirmation.PENDING, timezone=sub.timezone)


def _confirm_target(
    session: Session, tokens: Tokens, token: str
) -> tuple[Subscriber | None, ConfirmResult | None]:
    """The pending subscriber `token` names, or the answer when there is nobody to confirm."""
    found = tokens.read_confirm(token)
    if found is None:
        return None, ConfirmResult(Confirmation.INVALID)
    sub = session.get(Subscriber, found[0])
    if sub is None or tokens.email_digest(sub.email) != found[1]:
        return None, ConfirmResult(Confirmation.INVALID)
    if sub.status == Status.PENDING:
        return sub, None
    if sub.status in (Status.ACTIVE, Status.PAUSED, Status.COMPLETED) and sub.confirmed_at:
        return sub, ConfirmResult(Confirmation.ALREADY, None, sub.next_due_at, sub.timezone)
    return sub, ConfirmResult(Confirmation.INVALID)


class Unsubscribe(enum.StrEnum):
    """What an unsubscribe link did."""

    DONE = "done"  # unsubscribed now, or was already, or no longer exists
    INVALID = "invalid"  # forged token


def subscriber_for_link(session: Session, tokens: Tokens, token: str) -> Subscriber | None:
    """The subscriber a genuine unsubscribe token names (None if forged or erased)."""
    found = tokens.read_unsubscribe(token)
    if found is None:
        return None
    sub = session.get(Subscriber, found[0])
    if sub is None or tokens.email_digest(sub.email) != found[1]:
        return None
    return sub


def unsubscribe_by_link(session: Session, tokens: Tokens, token: str, now: datetime) -> Unsubscribe:
    """Unsubscribe whoever an unsubscribe token names, at once (RFC 8058); commits."""
    if tokens.read_unsubscribe(token) is None:
        return Unsubscribe.INVALID
    sub = subscriber_for_link(session, tokens, token)
    if sub is not None and sub.status not in LEFT:
        pace.leave(session, sub, now, history.LINK)  # recorded in their history
    session.commit()
    return Unsubscribe.DONE


def invite(
    session: Session,
    composer: Composer,
    open_transport: Callable[[], Transport],
    address: str,
    *,
    name: str | None,
    timezone: str,
    now: datetime,
) -> tuple[SignupRequest, SendReport]:
    """The operator asks `address` to join (double opt-in): pending, and the confirmation
    sent at once (queued if the relay cannot be reached); commits. Conflict for someone
    already on the course: the operator may know what strangers on the web may not."""
    with contextlib.suppress(NotFound):
        existing = find_subscriber(session, address)
        refused = no_way_back(existing)
        if refused is not None:
            raise Conflict(refused)
        if existing.status not in (Status.PENDING, *REJOINABLE):
            raise Conflict(f"{existing.email} is already a subscriber (status: {existing.status})")
    result = request_subscription(
        session,
        address,
        name=name,
        timezone=timezone,
        now=now,
        source="operator",
        message_id=composer.message_id,
    )
    report = deliver_notices(session, open_transport, composer, [result.confirmation], now)
    return result, report


def deliver_notices(
    session: Session,
    open_transport: Callable[[], Transport],
    composer: Composer,
    delivery_ids: Iterable[int | None],
    now: datetime,
) -> SendReport:
    """Send queued confirmations and welcomes at once, over one connection.

    The one way every front-end (the web face, `subscribers add --double-opt-in`,
    `inbound`) sends them: if the relay cannot be reached, what is left stays
    queued and the next `send` run delivers it; the report's `skipped` says why.
    """
    report = SendReport()
    ids = [delivery_id for delivery_id in delivery_ids if delivery_id is not None]
    if not ids:
        return report
    try:
        with open_transport() as transport:
            for delivery_id in ids:
                deliver_now(session, transport, composer, delivery_id, now, report)
    except TransportUnavailable as exc:
        report.skipped = f"queued for the next send run: {exc}"
    return report
