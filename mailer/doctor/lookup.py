"""DNS lookups for doctor: the system's resolver or `dns_server`, shared by dnspython and pyspf.

A resolver that does not answer is a verdict, never a traceback; after the
first timeout every later lookup fails at once with the same error (README,
"Getting into the inbox"). A query it refuses fails alone.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

DEFAULT_TIMEOUT = 5.0  # seconds for one lookup, retries included


class Unanswered(Exception):
    """The resolver could not be asked, or did not answer in time."""


class Dns:
    """One resolver for a doctor run: TXT, MX and address lookups that never raise but
    Unanswered. A name that does not exist, or has no record of the type, gives []."""

    def __init__(self, server: str | None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.server = server
        self.timeout = timeout
        self.failure: str | None = None  # set at the first lookup nobody answered
        self._resolver: Any = None

    @property
    def name(self) -> str:
        """Who answers: `dns_server`, or the system's resolver."""
        return f"the resolver at {self.server}" if self.server else "the system's resolver"

    def _make(self) -> Any:
        import dns.resolver

        if self.server is None:
            try:
                resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                raise Unanswered(
                    "this machine has no resolver configured (/etc/resolv.conf)"
                ) from None
        else:
            resolver = dns.resolver.Resolver(configure=False)
            host, port = _host_port(self.server)
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except OSError as exc:
                raise Unanswered(f"dns_server {self.server!r}: {exc.strerror or exc}") from None
            resolver.nameservers = [str(infos[0][4][0])]
            resolver.port = port
        resolver.lifetime = self.timeout
        resolver.timeout = min(2.0, self.timeout)
        return resolver

    def query(self, name: str, rdtype: str) -> list[Any]:
        """The records of `rdtype` at `name` (dnspython rdata), [] when there are none."""
        import dns.exception
        import dns.resolver

        if self.failure:
            raise Unanswered(self.failure)
        try:
            if self._resolver is None:
                self._resolver = self._make()
            return list(self._resolver.resolve(name, rdtype, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except Unanswered as exc:
            self.failure = str(exc)
            raise
        except dns.exception.Timeout:
            self.failure = f"{self.name} did not answer within {self.timeout:g} s"
        except dns.resolver.NoNameservers:  # refused (SERVFAIL, REFUSED): this name only
            raise Unanswered(
                f"{self.name} refused or failed the query for {name} ({rdtype})"
            ) from None
        except dns.exception.DNSException as exc:  # a name it cannot ask about: this one only
            raise Unanswered(f"{self.name} could not look up {name} ({rdtype}): {exc}") from None
        raise Unanswered(self.failure)

    def txt(self, name: str) -> list[str]:
        """Each TXT record at `name`, its strings joined (RFC 7208 §3.3)."""
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self.query(name, "TXT")]

    def addresses(self, name: str) -> list[str]:
        """The IPv4 and IPv6 addresses of `name`."""
        return [r.address for kind in ("A", "AAAA") for r in self.query(name, kind)]

    def pyspf_lookup(
        self, name: str, qtype: str, strict: object = True, timeout: float = 0
    ) -> list[tuple[tuple[str, str], Any]]:
        """spf.DNSLookup's interface (pyspf 2.0), answered by this resolver."""
        import spf

        try:
            answers = self.query(name, qtype)
        except Unanswered as exc:
            raise spf.TempError(f"DNS {exc}") from None
        key = (name, qtype)
        if qtype in ("A", "AAAA"):
            return [(key, r.address) for r in answers]
        if qtype == "MX":
            return [(key, (r.preference, r.exchange)) for r in answers]
        if qtype == "PTR":
            return [(key, r.target.to_text(True)) for r in answers]
        if qtype in ("TXT", "SPF"):
            return [(key, list(r.strings)) for r in answers]
        return []


@contextlib.contextmanager
def pyspf_through(lookups: Dns) -> Iterator[None]:
    """pyspf's lookups go through `lookups` (and so to dns_server) while the block runs."""
    import spf

    saved = spf.DNSLookup
    spf.DNSLookup = lookups.pyspf_lookup
    try:
        yield
    finally:
        spf.DNSLookup = saved


def _host_port(server: str) -> tuple[str, int]:
    """`dns_server`'s host and port (53 unless given); the setting was validated at load."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest.removeprefix(":") or 53)
    if server.count(":") == 1:
        host, port = server.split(":")
        return host, int(port)
    return server, 53
