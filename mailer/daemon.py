"""`rekindle-mail daemon`: the same `send` as cron, run on a `schedule` loop until told to stop."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

import schedule

from mailer.errors import RekindleError, TemporaryError
from mailer.send.attempt import SendReport

log = logging.getLogger("rekindle.daemon")

MAX_BACKOFF = 1800.0  # seconds: a relay that stays down is tried at least every half hour


class SendLoop:
    """Runs `tick` every `interval` seconds; a failing tick backs off and the loop goes on.

    `tick(stop)` performs one send run and must return between messages once
    `stop()` is true. `clock` is the monotonic clock used for back-off (tests
    inject their own); the `schedule` scheduler decides when ticks are due.
    """

    def __init__(
        self,
        tick: Callable[[Callable[[], bool]], SendReport],
        interval: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tick = tick
        self.interval = interval
        self.clock = clock
        self.stopping = threading.Event()
        self.failures = 0
        self.resume_at = 0.0
        self.scheduler = schedule.Scheduler()
        self.job = self.scheduler.every(interval).seconds.do(self.run_tick)

    def run_tick(self) -> SendReport | None:
        """One tick: a send run, unless backing off or stopping. Never raises RekindleError."""
        if self.stopping.is_set() or self.clock() < self.resume_at:
            return None
        try:
            report = self.tick(self.stopping.is_set)
        except TemporaryError as exc:
            self.failures += 1
            backoff = min(self.interval * 2**self.failures, max(MAX_BACKOFF, self.interval))
            self.resume_at = self.clock() + backoff
            log.warning("send failed, retrying in %ds: %s", backoff, exc)
            return None
        except RekindleError as exc:
            # Bad configuration or course content: say so every tick until it is fixed.
            log.error("send failed: %s", exc)
            return None
        if self.failures:
            log.info("send works again after %d failed tick(s)", self.failures)
        self.failures, self.resume_at = 0, 0.0
        if report.sent or report.failed or report.deferred:
            log.info(report.summary())
        return report

    def run(self) -> None:
        """Tick now, then whenever the schedule says, until `stop()` is called."""
        self.run_tick()
        while not self.stopping.is_set():
            self.scheduler.run_pending()
            idle = self.scheduler.idle_seconds
            self.stopping.wait(timeout=min(max(idle or 0.0, 0.05), 1.0))
        log.info("stopped")

    def stop(self, *_: object) -> None:
        """Ask the loop to end; the message in flight is finished first."""
        if not self.stopping.is_set():
            log.info("stopping after the message in flight")
        self.stopping.set()


def install_signal_handlers(loop: SendLoop) -> None:
    """SIGTERM and SIGINT stop the loop gracefully."""

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
