"""The web face's background sender: confirmations and welcomes leave after the page is answered.

A request only stores the person and queues a ledger row; this thread hands
the row to the relay a moment later. So the answer takes the same time whether
or not the address was already known, and a slow or dead relay never holds a
request thread. Whatever this thread cannot send stays queued in the ledger,
and the next `send` run delivers it (README, "People joining and leaving on
their own").
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING

from mailer import dispatch
from mailer.errors import TransportUnavailable

if TYPE_CHECKING:
    from mailer.compose import Composer
    from mailer.runtime import Runtime

log = logging.getLogger("rekindle.web")

BACKLOG = 1000  # ids waiting in memory; beyond that the ledger alone keeps them for `send`
BATCH = 50  # rows sent over one relay connection before it is closed again
_STOP = -1


class Courier:
    """One daemon thread delivering queued ledger rows by id, in the order they were handed in."""

    def __init__(self, runtime: Runtime, composer: Composer) -> None:
        self._runtime = runtime
        self._composer = composer
        self._queue: queue.Queue[int] = queue.Queue(BACKLOG)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, delivery_id: int | None) -> None:
        """Deliver this queued row soon; returns at once (None: nothing to send)."""
        if delivery_id is None:
            return
        self._start()
        try:
            self._queue.put_nowait(delivery_id)
        except queue.Full:
            log.warning("sender busy: delivery %d waits for the next send run", delivery_id)

    def wait_idle(self) -> None:
        """Block until everything handed in so far has been tried (for tests and shutdown)."""
        self._queue.join()

    def close(self) -> None:
        """Finish what was handed in, then end the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="rekindle-courier", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                ids = [i for i in batch if i != _STOP]
                if ids:
                    self._deliver(ids)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if _STOP in batch:
                return

    def _deliver(self, ids: list[int]) -> None:
        """Send `ids` over one connection; on any trouble the rest stay queued for `send`."""
        runtime = self._runtime
        try:
            with runtime.session() as session, runtime.transport() as transport:
                for delivery_id in ids:
                    dispatch.deliver_now(
                        session, transport, self._composer, delivery_id, runtime.now()
                    )
        except TransportUnavailable as exc:
            log.warning("queued for the next send run: %s", exc)
        except Exception:  # a database outage or a bug: never kill the thread
            log.exception("background sender: %d message(s) left for the next send run", len(ids))
