"""A real DNS server for tests: dnslib on a free loopback port (UDP and TCP), serving a dict.

A zone maps a name to its records by type, e.g.

    {"example.org": {"TXT": ["v=spf1 -all"], "MX": [(10, "mx.example.org")]},
     "mx.example.org": {"A": ["198.51.100.25"]}}

A name missing from the zone is NXDOMAIN; a name present without the type asked
for answers with no records. TXT texts longer than 255 bytes are split into
strings of 255, as a zone file would hold a DKIM key. `Silent` is a resolver
that never answers: a UDP socket that reads nothing.
"""

from __future__ import annotations

import copy
import socket
from typing import Any

from dnslib import AAAA, MX, QTYPE, RCODE, RR, TXT, A
from dnslib.server import DNSLogger, DNSServer

Zone = dict[str, dict[str, list[Any]]]


def _rdata(kind: str, value: Any) -> Any:
    if kind == "TXT":
        data = value.encode()
        return TXT([data[i : i + 255] for i in range(0, len(data), 255)] or [b""])
    if kind == "MX":
        preference, exchange = value
        return MX(exchange, preference)
    return {"A": A, "AAAA": AAAA}[kind](value)


class ZoneResolver:
    """dnslib resolver answering from a Zone, which a test may change between lookups."""

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.questions: list[tuple[str, str]] = []
        self.refused: set[str] = set()  # names answered REFUSED

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        kind = QTYPE[request.q.qtype]
        self.questions.append((name, kind))
        if name in self.refused:
            reply.header.rcode = RCODE.REFUSED
            return reply
        records = self.zone.get(name)
        if records is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for value in records.get(kind, []):
            reply.add_answer(RR(name, request.q.qtype, rdata=_rdata(kind, value), ttl=60))
        return reply


def free_udp_tcp_port() -> int:
    """A loopback port free for both UDP and TCP."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


class NameServer:
    """A running DNS server (UDP and TCP on one port) and the zone it serves."""

    def __init__(self, zone: Zone) -> None:
        self.resolver = ZoneResolver(copy.deepcopy(zone))
        self.port = free_udp_tcp_port()
        quiet = DNSLogger("-request,-reply,-truncated,-error", prefix=False)
        self.servers = [
            DNSServer(self.resolver, address="127.0.0.1", port=self.port, tcp=tcp, logger=quiet)
            for tcp in (False, True)
        ]
        for server in self.servers:
            server.start_thread()

    @property
    def zone(self) -> Zone:
        return self.resolver.zone

    @property
    def address(self) -> str:
        """The value of dns_server that reaches it."""
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
            server.server.server_close()


class Silent:
    """A resolver that never answers: its UDP socket takes every query and reads none."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()
