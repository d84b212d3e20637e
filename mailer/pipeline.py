"""SMTP round-trips overlapped with the run's own work: each connection sends from its own thread.

The run's thread claims, composes and records; each sender thread owns one
transport (one SMTP connection) and only talks to the server. A sender hands
back the server's answer and waits until the run has committed it before it
sends again, so a crash leaves at most one accepted-but-unrecorded message per
open connection (SPEC §5). The answers that arrive together are committed
together.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from mailer.attempt import Attempt, SendReport, record, send_one
from mailer.errors import TransportUnavailable
from mailer.transport import Transport


@dataclass
class Job:
    """One claimed message on its way to the server."""

    attempt: Attempt
    done: Callable[[], None]
    recorded: threading.Event = field(default_factory=threading.Event)


Result = tuple[Job, Exception | None]


class Pipeline:
    """Sends through `transports` (one thread each) and records every answer in `session`."""

    def __init__(
        self,
        session: Session,
        transports: Sequence[Transport],
        now: datetime,
        report: SendReport,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        self.session = session
        self.stop = stop
        self.now = now
        self.report = report
        self.connections = len(transports)
        self._inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self._in_flight = 0
        self._unavailable: TransportUnavailable | None = None
        self._threads = [
            threading.Thread(target=self._serve, args=(t,), name=f"smtp-{i}", daemon=True)
            for i, t in enumerate(transports)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, attempt: Attempt, done: Callable[[], None], held: Callable[[], bool]) -> bool:
        """Send `attempt` on the next free connection; `done` is called once it is recorded.

        Once a connection is free, `held` is asked whether the run still holds the
        claim (its lease may have run out while the run was held up): if not, the
        message is not sent and counts as busy. False (nothing sent) when a stop
        was asked for meanwhile. Raises TransportUnavailable (after recording
        everything in flight) once a connection found the server unreachable or
        refusing the session.
        """
        if self._unavailable is None:
            while self._in_flight >= self.connections:
                self._collect()
        if self._unavailable is not None:
            self.drain()
        if self.stop is not None and self.stop():
            return False
        if not held():
            self.report.busy += 1
            done()
            return True
        self._inbox.put(Job(attempt, done))
        self._in_flight += 1
        return True

    def drain(self) -> None:
        """Wait for every message in flight and record it; raise TransportUnavailable if seen."""
        while self._in_flight:
            self._collect()
        if self._unavailable is not None:
            raise self._unavailable

    def settle(self) -> None:
        """Wait for every message in flight and record it, without raising TransportUnavailable."""
        while self._in_flight:
            self._collect()

    def close(self) -> None:
        """Record what is in flight, then end the threads and their connections."""
        try:
            self.settle()
        finally:
            for _ in self._threads:
                self._inbox.put(None)
            for thread in self._threads:
                thread.join(timeout=60)

    def _collect(self) -> None:
        """Record the next answer and any others already in; one commit for all of them."""
        results = [self._results.get()]
        while True:
            try:
                results.append(self._results.get_nowait())
            except queue.Empty:
                break
        try:
            for _, error in results:
                if isinstance(error, TransportUnavailable) and self._unavailable is None:
                    self._unavailable = error
            record(self.session, [(j.attempt, e) for j, e in results], self.now, self.report)
            self.session.commit()
            for job, _ in results:
                job.done()
        finally:
            self._in_flight -= len(results)
            for job, _ in results:
                job.recorded.set()

    def _serve(self, transport: Transport) -> None:
        with transport:
            while True:
                job = self._inbox.get()
                if job is None:
                    return
                try:
                    error = send_one(transport, job.attempt.message)
                except Exception as exc:  # a bug in a transport: recorded and raised by the run
                    error = exc
                self._results.put((job, error))
                job.recorded.wait()
