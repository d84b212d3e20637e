"""A test SMTP server that takes its time, for runs long enough to interrupt.

`SlowServer` is `mailserver.MailServer` whose handler waits `delay` seconds in
DATA before answering, can hold back its reply to one chosen message (kept,
but not yet answered: the moment a crash makes a duplicate), and can keep
every reply back until enough clients have connected.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP

from mailserver import CountingController, MailServer, RecordingHandler, free_port

POLL = 0.005


class SlowHandler(RecordingHandler):
    """Keeps messages like RecordingHandler, but slowly, and on cue.

    - `delay`: seconds to wait in DATA before keeping a message and answering.
    - `hold_at`: the message with this number (1-based, across all clients) is
      kept at once, then its reply waits until `release` is set; `holding` is
      set while it waits (the client has sent it and awaits the reply).
    - `gate`: while it returns False, every DATA waits (up to `gate_timeout`).
    """

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.hold_at: int | None = None
        self.holding = threading.Event()
        self.release = threading.Event()
        self.gate: Callable[[], bool] | None = None
        self.gate_timeout = 15.0
        self._seen = 0

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        if self.gate is not None:
            deadline = time.monotonic() + self.gate_timeout
            while not self.gate() and time.monotonic() < deadline:
                await asyncio.sleep(POLL)
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self._seen += 1
            number = self._seen
        if number == self.hold_at:
            self._keep(envelope)
            self.holding.set()
            while not self.release.is_set():
                await asyncio.sleep(POLL)
            return "250 2.0.0 Message accepted for delivery"
        return await super().handle_DATA(server, session, envelope)


class SlowServer(MailServer):
    """A MailServer with a SlowHandler; `handler` gives its knobs."""

    handler: SlowHandler

    def __init__(self, delay: float = 0.0, **kwargs: Any) -> None:
        self.handler = SlowHandler(delay)
        self.port = free_port()
        self.controller = CountingController(
            self.handler, hostname="127.0.0.1", port=self.port, **kwargs
        )

    def count(self) -> int:
        """How many messages the server has kept so far."""
        with self.handler.lock:
            return len(self.handler.messages)
