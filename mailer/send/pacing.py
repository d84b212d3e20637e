"""Pacing: at most `rate` messages a second, shared by every connection of a run or relay."""

from __future__ import annotations

import threading
import time


class Pacer:
    """Keeps a run (or a relay's connections) under `rate` messages per second (0: no limit).

    Safe to share between threads: each caller gets its own slot in time.
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Sleep until the next message may go."""
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)
