"""The web face's background work: sign-ups are stored, and their mail sent, after the answer.

A sign-up request only checks the form and hands it here, so it does the same
work, in the same time, whether or not the address is known; a slow database
write or a slow or dead relay never holds a request thread. One thread stores
sign-ups (mailer.signup) and passes their confirmations to a second, which
sends queued ledger rows by id. Whatever that one cannot send stays queued in
the ledger for the next `send` run (README, "People joining and leaving on
their own"). A third sends the one message that has no ledger row: the goodbye
to a reader who erased themselves (README, "The course page").
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from mailer.app import signup
from mailer.errors import TransportUnavailable
from mailer.transport.base import DeliveryError

if TYPE_CHECKING:
    from mailer.content.compose import Composer
    from mailer.content.message import Outgoing
    from mailer.runtime import Runtime

log = logging.getLogger("rekindle.web")

BACKLOG = 1000  # items waiting in memory
BATCH = 50  # rows sent over one relay connection before it is closed again
STORE_THREAD = "rekindle-signups"
SEND_THREAD = "rekindle-sender"
MAIL_THREAD = "rekindle-goodbyes"

T = TypeVar("T")


@dataclass(frozen=True)
class SignUp:
    """A checked sign-up form, waiting to be stored."""

    email: str
    name: str | None
    timezone: str
    now: datetime


class Worker(Generic[T]):
    """A daemon thread that hands what it is given, in batches, to `handle`."""

    def __init__(self, name: str, handle: Callable[[list[T]], None], batch: int) -> None:
        self.name = name
        self._handle = handle
        self._batch = batch
        self._queue: queue.Queue[T | None] = queue.Queue(BACKLOG)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, item: T) -> bool:
        """Queue `item`; False when the backlog is full (the caller decides what then)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return False
        return True

    def join(self) -> None:
        """Block until everything queued so far has been handled."""
        self._queue.join()

    def close(self) -> None:
        """Handle what is queued, then end the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _run(self) -> None:
        while True:
            got = [self._queue.get()]
            while len(got) < self._batch and got[-1] is not None:
                try:
                    got.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                items = [item for item in got if item is not None]
                if items:
                    self._handle(items)
            except Exception:  # a database outage or a bug: never end the thread
                log.exception("%s: %d item(s) not handled", self.name, len(got))
            finally:
                for _ in got:
                    self._queue.task_done()
            if got[-1] is None:
                return


class Courier:
    """Stores sign-ups and sends confirmations and welcomes, away from the request threads."""

    def __init__(self, runtime: Runtime, composer: Composer) -> None:
        self._runtime = runtime
        self._composer = composer
        self._store: Worker[SignUp] = Worker(STORE_THREAD, self._store_all, 1)
        self._send: Worker[int] = Worker(SEND_THREAD, self._send_all, BATCH)
        self._mail: Worker[Outgoing] = Worker(MAIL_THREAD, self._mail_all, BATCH)

    def sign_up(self, form: SignUp) -> None:
        """Start double opt-in for a checked form soon; returns at once."""
        if not self._store.put(form):  # a flood: store it now rather than lose it
            self._store_all([form])

    def submit(self, delivery_id: int | None) -> None:
        """Send this queued ledger row soon; returns at once (None: nothing to send)."""
        if delivery_id is not None and not self._send.put(delivery_id):
            log.warning("sender busy: delivery %d waits for the next send run", delivery_id)

    def mail(self, message: Outgoing) -> None:
        """Send a message that has no ledger row soon, once; returns at once. If the relay
        cannot take it, it is logged and dropped: nothing about its reader is kept."""
        if not self._mail.put(message):
            log.warning("too many goodbyes waiting: one to an erased reader is dropped")

    def wait_idle(self) -> None:
        """Block until every sign-up handed in is stored and its mail tried (tests, shutdown)."""
        self._store.join()
        self._send.join()
        self._mail.join()

    def close(self) -> None:
        """Finish what was handed in, then end the threads."""
        self._store.close()
        self._send.close()
        self._mail.close()

    def shutdown(self) -> None:
        """Store every sign-up handed in and send the goodbyes (they have no ledger row);
        other unsent mail stays queued in the ledger for `send`."""
        self._store.close()
        self._mail.close()

    def _store_all(self, forms: list[SignUp]) -> None:
        runtime = self._runtime
        for form in forms:
            with runtime.session() as session:
                result = signup.request_subscription(
                    session,
                    form.email,
                    name=form.name,
                    timezone=form.timezone,
                    now=form.now,
                    source="web",
                    message_id=self._composer.message_id,
                )
            if result.refused:  # the page answered as for anyone: only the operator knows
                log.info("sign-up form: nothing sent: %s", result.refused)
            self.submit(result.confirmation)

    def _send_all(self, ids: list[int]) -> None:
        """Send `ids` over one connection; on any trouble the rest stay queued for `send`."""
        runtime = self._runtime
        with runtime.session() as session:
            report = signup.deliver_notices(
                session, runtime.transport, self._composer, ids, runtime.now()
            )
        if report.skipped:
            log.warning("%s", report.skipped)

    def _mail_all(self, messages: list[Outgoing]) -> None:
        """Send messages without ledger rows over one connection; failures are logged only."""
        try:
            with self._runtime.transport() as transport:
                for message in messages:
                    try:
                        transport.send(message)
                    except DeliveryError as exc:
                        log.warning("a goodbye was refused: %s", exc)
        except TransportUnavailable as exc:
            log.warning("%d goodbye(s) not sent: %s", len(messages), exc)
