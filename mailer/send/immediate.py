"""Sending one queued notice at once, outside a run: a confirmation right after a sign-up."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from mailer.ledger import claims
from mailer.send.attempt import deliver
from mailer.send.notices import prepare
from mailer.send.report import SendReport
from mailer.transport.base import Transport

if TYPE_CHECKING:
    from mailer.content.compose import Composer


def deliver_now(
    session: Session,
    transport: Transport,
    composer: Composer,
    delivery_id: int,
    now: datetime,
    report: SendReport | None = None,
) -> SendReport:
    """Send one queued message now (counted in `report`); raises TransportUnavailable (the
    row stays queued for the next `send` run) when the server or outbox cannot take it."""
    report = report or SendReport()
    claim = claims.claim_one(session, delivery_id, now)
    if claim is None:
        report.busy += 1
        return report
    attempt = prepare(session, composer, claim, now)
    if attempt is not None:
        deliver(session, transport, attempt, now, report)
    return report
