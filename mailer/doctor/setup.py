"""The configuration checks of doctor: links, footer, replies, the From domain, DKIM alignment."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from mailer.config import Settings, a_label
from mailer.doctor.check import Check, ok, problem, warning
from mailer.errors import ConfigError


def _local(host: str) -> bool:
    """A host name only this machine (or no one) can reach."""
    if host == "localhost" or host.endswith((".localhost", ".local")) or "." not in host:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def base_url(settings: Settings) -> Check:
    """Links in mail must reach readers: https (RFC 8058 one-click needs it), a public host."""
    url = settings.base_url
    parts = urlsplit(url)
    host = parts.hostname or ""
    fix = "set base_url to the public https:// address of 'rekindle-mail serve'"
    if _local(host):
        return problem("base-url", f"{url}: readers cannot reach {host}", fix)
    if parts.scheme != "https":
        return problem(
            "base-url",
            f"{url}: unsubscribe links over http (one-click unsubscribe needs https)",
            fix,
        )
    return ok("base-url", url)


def postal_address(settings: Settings) -> Check:
    """CAN-SPAM and many other laws ask for a postal address in every footer."""
    if not settings.postal_address:
        return problem(
            "postal-address",
            "no postal_address: anti-spam law (CAN-SPAM and others) wants one in every message",
            "set postal_address to a postal address where you receive mail",
        )
    return ok("postal-address", settings.postal_address)


def reply_to(settings: Settings) -> Check:
    """Replies reach a person."""
    if not settings.reply_to:
        return warning(
            "reply-to",
            f"no reply_to: replies go to {settings.sender_email}",
            "set reply_to to an address a person reads",
        )
    return ok("reply-to", settings.reply_to)


def sender(settings: Settings) -> Check:
    """`from` names a real domain, whose DNS the other checks read."""
    domain = settings.sending_domain
    if _local(domain):
        return problem(
            "from",
            f"{settings.sender_email}: {domain} is not a domain on the Internet",
            "set from to an address at your own domain, like 'Rekindle <hello@example.org>'",
        )
    try:
        a_label(domain)
    except ConfigError as exc:
        return problem("from", str(exc), "set from to an address at a domain DNS can name")
    return ok("from", settings.from_address)


def aligned(one: str, other: str) -> bool:
    """Relaxed alignment for certain: the same domain, or one a subdomain of the other."""
    return one == other or one.endswith("." + other) or other.endswith("." + one)


def shared_parent(one: str, other: str) -> str:
    """The longest parent domain of both (labels in common from the right), or ""."""
    common: list[str] = []
    for left, right in zip(reversed(one.split(".")), reversed(other.split(".")), strict=False):
        if left != right:
            break
        common.insert(0, left)
    return ".".join(common)


def alignment(settings: Settings) -> Check:
    """DKIM's d= must align with the From domain, or DMARC ignores the signature.

    DMARC's relaxed alignment asks for the same organisational domain, which only a
    public-suffix list tells for sure (README, "### doctor"): sharing a parent of two
    labels or more (news.example.org and mail.example.org) is a warning naming it.
    """
    signing = settings.signing_domain  # an A-label, as DKIM and DMARC compare them
    try:
        domain = a_label(settings.sending_domain)
    except ConfigError:
        domain = settings.sending_domain
    found = f"DKIM d={signing}, From {domain}"
    if aligned(signing, domain):
        return ok("alignment", found)
    parent = shared_parent(signing, domain)
    if parent.count(".") >= 1:
        return warning(
            "alignment",
            f"{found}: aligned if {parent} is your organisational domain (the one you "
            f"registered), not a public suffix",
            f"set dkim_domain to {domain} or {parent} to be sure (or leave it unset)",
        )
    return problem(
        "alignment",
        f"dkim_domain {signing} does not align with the From domain {domain}: "
        f"DMARC ignores its signatures",
        f"set dkim_domain to {domain} (or leave it unset)",
    )
