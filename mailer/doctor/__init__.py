"""`doctor`: the checks an operator runs before the first send and whenever mail goes to spam.

Each check is a small function returning a Check (ok, warning or problem, what
was found, the one-line fix); `diagnose` runs them all in the order the README
("Getting into the inbox") lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime

from sqlalchemy.orm import Session

from mailer.config import Settings
from mailer.doctor import records, relay, setup
from mailer.doctor.check import Check, Verdict, ok, problem, warning
from mailer.doctor.lookup import DEFAULT_TIMEOUT, Dns

__all__ = ["Check", "Verdict", "diagnose", "problems"]


def diagnose(
    settings: Settings,
    sessions: Callable[[], AbstractContextManager[Session]],
    now: datetime,
    *,
    dns_timeout: float = DEFAULT_TIMEOUT,
    smtp_timeout: float = relay.TIMEOUT,
) -> list[Check]:
    """Every check, configuration first, then DNS, the relays and the complaint rate."""
    lookups = Dns(settings.dns_server, dns_timeout)
    return [
        setup.sender(settings),
        setup.base_url(settings),
        setup.postal_address(settings),
        setup.reply_to(settings),
        setup.alignment(settings),
        records.spf(lookups, settings),
        records.dmarc(lookups, settings),
        *records.dkim(lookups, settings),
        records.bounce_mx(lookups, settings),
        *relay.relays(settings, smtp_timeout),
        complaints(sessions, now),
    ]


def problems(checks: list[Check]) -> int:
    """How many checks found a problem (doctor's exit status is 1 when any did)."""
    return sum(1 for check in checks if check.status is Verdict.PROBLEM)


def complaints(sessions: Callable[[], AbstractContextManager[Session]], now: datetime) -> Check:
    """Warn above 0.1 % of the subscribers mailed in the last 30 days (Gmail's line: 0.3 %)."""
    from sqlalchemy.exc import SQLAlchemyError

    from mailer.errors import RekindleError
    from mailer.reports.complaints import GMAIL_LIMIT, WARN_AT, WINDOW_DAYS, complaint_rate

    try:
        with sessions() as session:
            found = complaint_rate(session, now)
    except (SQLAlchemyError, RekindleError, OSError) as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
        return problem("complaints", f"cannot read the database: {reason}", "check database_url")
    days = WINDOW_DAYS
    if not found.mailed:
        return ok("complaints", f"nobody was sent mail in the last {days} days")
    detail = (
        f"{found.complaints} of {found.mailed} subscribers mailed in the last {days} days "
        f"complained ({found.rate:.2%})"
    )
    if found.rate > WARN_AT:
        over = (
            "above Gmail's line of 0.3 %" if found.rate > GMAIL_LIMIT else "Gmail's line is 0.3 %"
        )
        return warning(
            "complaints",
            f"{detail}: {over}",
            "send only to people who asked (double opt-in), say who you are in the first "
            "line, and keep the unsubscribe link plain to see",
        )
    return ok("complaints", detail)
