"""Transports: a URL scheme picks SMTP; with no SMTP URL, mail goes to the Maildir outbox."""

from __future__ import annotations

from mailer.config import Settings
from mailer.relays import Relay
from mailer.transport.base import (
    DeliveryError,
    MessageRefused,
    RecipientRefused,
    TemporaryFailure,
    Transport,
    Withdrawn,
)
from mailer.transport.maildir import MaildirTransport
from mailer.transport.smtp import SmtpTransport

__all__ = [
    "DeliveryError",
    "MaildirTransport",
    "MessageRefused",
    "RecipientRefused",
    "SmtpTransport",
    "TemporaryFailure",
    "Transport",
    "Withdrawn",
    "open_transport",
]


def open_transport(settings: Settings, relay: Relay | None = None) -> Transport:
    """A transport to `relay` (default: smtp_url's first relay), else the Maildir `outbox`."""
    relay = relay or (settings.relays[0] if settings.relays else None)
    if relay is not None:
        return SmtpTransport(
            relay.url, password=settings.smtp_password, ca_file=settings.tls_ca_file
        )
    return MaildirTransport(settings.outbox)
