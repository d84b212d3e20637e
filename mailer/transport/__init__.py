"""Transports: a URL scheme picks SMTP; with no SMTP URL, mail goes to the Maildir outbox."""

from __future__ import annotations

from mailer.config import Settings
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


def open_transport(settings: Settings) -> Transport:
    """The transport the settings name: `smtp_url` if set, else the Maildir `outbox`."""
    if settings.smtp_url:
        return SmtpTransport(
            settings.smtp_url, password=settings.smtp_password, ca_file=settings.tls_ca_file
        )
    return MaildirTransport(settings.outbox)
