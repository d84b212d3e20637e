"""The relay check of doctor: one connection per relay, EHLO, TLS, QUIT; no AUTH, no mail."""

from __future__ import annotations

import smtplib
import ssl
from urllib.parse import urlsplit

from mailer.config import Settings
from mailer.doctor.check import Check, ok, problem, warning
from mailer.errors import describe
from mailer.transport.relays import DEFAULT_PORTS, Relay
from mailer.transport.smtp import is_loopback

TIMEOUT = 5.0  # seconds to connect and for each reply


def relays(settings: Settings, timeout: float = TIMEOUT) -> list[Check]:
    """One check per relay in smtp_url; a warning when mail only goes to the outbox."""
    if not settings.relays:
        return [
            warning(
                "relay",
                f"no smtp_url: mail is written to the Maildir outbox {settings.outbox}",
                "set smtp_url to your relay, e.g. smtp+starttls://user@smtp.example.org:587",
            )
        ]
    return [relay(r, settings, timeout) for r in settings.relays]


def relay(relay: Relay, settings: Settings, timeout: float = TIMEOUT) -> Check:
    """Reach one relay the way `send` would, and see that the session is encrypted."""
    parts = urlsplit(relay.url)
    host, scheme = parts.hostname or "", parts.scheme
    port = parts.port or DEFAULT_PORTS[scheme]
    where = f"{scheme}://{host}:{port}"
    try:
        context = ssl.create_default_context(
            cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None
        )
    except (OSError, ssl.SSLError) as exc:
        return problem("relay", f"cannot load tls_ca_file: {exc}", "point tls_ca_file at a PEM")
    smtp: smtplib.SMTP
    if scheme == "smtps":
        smtp = smtplib.SMTP_SSL(timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(timeout=timeout)
    smtp._host = host  # type: ignore[attr-defined]  # the name TLS verifies
    try:
        code, text = smtp.connect(host, port)
        if code != 220:
            return problem("relay", f"{where} refused the session: {code} {_text(text)}", _FIX)
        code, text = smtp.ehlo()
        if code != 250:
            return problem("relay", f"{where} refused EHLO: {code} {_text(text)}", _FIX)
        offers = smtp.has_extn("starttls")
        if scheme == "smtp+starttls":
            if not offers:
                return problem("relay", f"{where} does not offer STARTTLS", _TLS_FIX)
            smtp.starttls(context=context)
            smtp.ehlo()
        return _verdict(where, scheme, host, offers)
    except ssl.SSLCertVerificationError as exc:
        smtp.close()  # a failed handshake leaves nothing to say QUIT on
        return problem(
            "relay",
            f"{where} presented a certificate that cannot be trusted ({exc.verify_message})",
            "set tls_ca_file if the relay uses a private CA, or fix its certificate",
        )
    except (smtplib.SMTPException, OSError) as exc:
        smtp.close()
        return problem("relay", f"cannot reach {where}: {describe(exc)}", _FIX)
    finally:
        _close(smtp)


_FIX = "check smtp_url's host and port, and that this machine may connect to the relay"
_TLS_FIX = "use smtp+starttls:// or smtps:// with a relay that offers TLS"


def _verdict(where: str, scheme: str, host: str, offers_starttls: bool) -> Check:
    if scheme == "smtps":
        return ok("relay", f"{where}: implicit TLS, certificate verified")
    if scheme == "smtp+starttls":
        return ok("relay", f"{where}: STARTTLS, certificate verified")
    if is_loopback(host):
        return ok("relay", f"{where}: no TLS, which is fine on this machine")
    offered = " (it offers STARTTLS)" if offers_starttls else ""
    return problem("relay", f"{where}: mail would travel unencrypted{offered}", _TLS_FIX)


def _text(text: bytes | str) -> str:
    value = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return " ".join(value.split())


def _close(smtp: smtplib.SMTP) -> None:
    """QUIT if a session is open, then close."""
    try:
        if smtp.sock is not None:
            smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()
