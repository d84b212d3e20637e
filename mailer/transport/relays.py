"""Several SMTP relays, tried in order: each with its own connections, pace and daily quota.

`smtp_url` may list relays separated by commas or spaces (or be a TOML array);
each URL may carry options in its query string:

    smtps://mailer@smtp1.example.org?connections=4&rate=20&daily=50000
    smtp+starttls://mailer@smtp2.example.org:587?daily=10000

`connections` SMTP connections at once (default: smtp_connections), `rate`
messages per second (default: no limit), `daily` messages per UTC day (default:
no quota). A run sends through the first relay that takes mail; when it
refuses the session or its quota is used up, the next one takes over. Quotas
are counted in the database, so every worker shares them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from mailer.errors import ConfigError
from mailer.masking import mask_url

OPTIONS = ("connections", "rate", "daily")
SCHEMES = ("smtp", "smtp+starttls", "smtps")
DEFAULT_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}


@dataclass(frozen=True)
class Relay:
    """One SMTP relay: its URL (without the options) and what the operator allows it."""

    url: str
    connections: int | None = None  # None: the run's default
    rate: float = 0.0  # messages per second, 0: no limit
    daily: int | None = None  # messages per UTC day, None: no quota

    @property
    def name(self) -> str:
        """host:port, the relay's name in quotas and messages (never a password)."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or DEFAULT_PORTS.get(parts.scheme, 25)}"


def parse_relays(value: object) -> tuple[Relay, ...]:
    """The relays `smtp_url` lists, in order; ConfigError saying what is wrong."""
    if isinstance(value, list):
        texts = [str(v) for v in value]
    elif isinstance(value, str):
        texts = [t for t in re.split(r"[\s,]+", value.strip()) if t]
    else:
        raise ConfigError(f"smtp_url must be a URL or a list of URLs, got {value!r}")
    return tuple(_relay(text) for text in texts)


def _relay(text: str) -> Relay:
    parts = urlsplit(text)
    shown = mask_url(text)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ConfigError(
            f"smtp_url {shown!r} must look like smtp://host:25, "
            "smtp+starttls://user@host:587 or smtps://user@host:465"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError(f"smtp_url {shown!r} has an invalid port") from None
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(
            f"smtp_url {shown!r}: unknown option {unknown[0]!r} (known: {', '.join(OPTIONS)})"
        )
    try:
        connections = int(options["connections"]) if "connections" in options else None
        rate = float(options.get("rate", 0))
        daily = int(options["daily"]) if "daily" in options else None
    except ValueError:
        raise ConfigError(
            f"smtp_url {shown!r}: connections and daily are whole numbers, "
            "rate a number of messages per second"
        ) from None
    if connections is not None and not 1 <= connections <= 32:
        raise ConfigError(f"smtp_url {shown!r}: connections must be between 1 and 32")
    if rate < 0 or (daily is not None and daily < 0):
        raise ConfigError(f"smtp_url {shown!r}: rate and daily must not be negative")
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return Relay(url, connections, rate, daily)
