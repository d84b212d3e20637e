"""An SMTP sink for the benchmark: aiosmtpd on loopback that accepts and counts, keeping nothing.

Run as its own process (`python sink.py PORT`) so the sink and the sender each
have a core. It prints "ready" once listening, and on SIGTERM prints the number
of messages and bytes it accepted, then exits.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from aiosmtpd.controller import Controller


class Counter:
    """Accepts every message; counts messages and bytes."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages += 1
        self.bytes += len(envelope.original_content or b"")
        return "250 2.0.0 OK"


def main() -> None:
    port = int(sys.argv[1])
    counter = Counter()
    controller = Controller(
        counter, hostname="127.0.0.1", port=port, enable_SMTPUTF8=True, data_size_limit=0
    )
    controller.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print("ready", flush=True)
    done.wait()
    controller.stop()
    print(f"{counter.messages} {counter.bytes}", flush=True)


if __name__ == "__main__":
    main()
