"""Transports: a URL scheme picks SMTP; with no SMTP URL, mail goes to the Maildir outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailer.transport.base import (
    DeliveryError,
    MessageRefused,
    RecipientRefused,
    TemporaryFailure,
    Transport,
    Withdrawn,
)

if TYPE_CHECKING:
    from mailer.config import Settings
    from mailer.transport.relays import Relay

# smtplib and ssl load only when a transport is opened: reading the settings (which
# parse smtp_url's relays, mailer.transport.relays) must not pay for them.

__all__ = [
    "DeliveryError",
    "MessageRefused",
    "RecipientRefused",
    "TemporaryFailure",
    "Transport",
    "Withdrawn",
    "open_transport",
]


def open_transport(settings: Settings, relay: Relay | None = None) -> Transport:
    """A transport to `relay` (default: smtp_url's first relay), else the Maildir `outbox`."""
    relay = relay or (settings.relays[0] if settings.relays else None)
    if relay is not None:
        from mailer.transport.smtp import SmtpTransport

        return SmtpTransport(
            relay.url, password=settings.smtp_password, ca_file=settings.tls_ca_file
        )
    from mailer.transport.maildir import MaildirTransport

    return MaildirTransport(settings.outbox)
