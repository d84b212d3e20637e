"""What the web face trusts: client addresses behind proxies, where a post came from, body size.

See the README, "People joining and leaving on their own" and "Behind a reverse proxy".
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from urllib.parse import urlsplit

from mailer.config import Settings

MAX_BODY = 16 * 1024  # bytes; a sign-up form is well under 1 KB
DEFAULT_PORTS = {"http": 80, "https": 443}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Origin = tuple[str, str, int]


class RateLimiter:
    """At most `limit` events per `window` seconds for each key (a sliding window)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Record an event for `key` and say whether it is within the limit."""
        now = time.monotonic()
        with self._lock:
            events = self._events[key]
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            if len(self._events) > 10_000:  # forget idle clients
                for idle in [k for k, v in self._events.items() if not v]:
                    del self._events[idle]
            return True


def origin(url: str) -> Origin | None:
    """(scheme, host, port) of an http(s) URL or `Origin` header value; None if it is neither."""
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            return None
        return scheme, parts.hostname.lower(), parts.port or DEFAULT_PORTS[scheme]
    except ValueError:  # a port that is not a number
        return None


def cross_site(
    method: str, origin_header: str | None, fetch_site: str | None, addressed_to: str, base_url: str
) -> bool:
    """Whether a request must be refused as a post from another site.

    A browser says where a post comes from: `Sec-Fetch-Site: cross-site`, or an
    `Origin` other than `base_url`'s and the one the request was addressed to
    (`Origin: null` included: sandboxed frames, data: URLs, privacy redirects).
    A post without `Origin` is not a browser's (curl, a script, a mail provider's
    RFC 8058 one-click request) and is judged on its merits.
    """
    if method.upper() in SAFE_METHODS:
        return False
    if (fetch_site or "").strip().lower() == "cross-site":
        return True
    if origin_header is None:
        return False
    found = origin(origin_header)
    return found is None or found not in {origin(base_url), origin(addressed_to)}


def server_options(settings: Settings) -> dict[str, object]:
    """waitress' settings for `serve`: limits, and which proxy headers to believe.

    With proxy_hops = N waitress believes the last N entries of X-Forwarded-For
    (the client is the Nth from the end) and X-Forwarded-Proto, from whichever
    peer connects: `serve` must then be reachable only through those proxies
    (listen on loopback or a private address). Without proxy_hops it believes
    none and removes them, so a client cannot name itself. waitress rewrites
    REMOTE_ADDR and the URL scheme itself; the app reads nothing else.
    """
    options: dict[str, object] = {
        "max_request_body_size": MAX_BODY + 1,  # waitress refuses a body of this size or more
        "connection_limit": settings.web_connection_limit,
        "channel_timeout": settings.web_channel_timeout,
        # waitress looks for idle connections every cleanup_interval (default 30) seconds.
        "cleanup_interval": min(30, settings.web_channel_timeout),
        "clear_untrusted_proxy_headers": True,
    }
    if settings.proxy_hops:
        options.update(
            trusted_proxy="*",
            trusted_proxy_count=settings.proxy_hops,
            trusted_proxy_headers={"x-forwarded-for", "x-forwarded-proto"},
        )
    return options
