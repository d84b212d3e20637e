"""SMTP round-trips overlapped with the run's own work: each connection sends from its own thread.

The run's thread claims, composes and records; each sender thread owns one
transport (one SMTP connection) and only talks to the server. While the run
records a sender's last answer, the sender already sends the next message's
envelope and content, but holds back its final dot until that answer is
committed: a crash leaves at most one accepted-but-unrecorded message per open
connection (SPEC §5). The answers that arrive together are committed together.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from mailer.attempt import Attempt, SendReport, record, send_one
from mailer.errors import TransportUnavailable
from mailer.transport import Transport, Withdrawn


@dataclass
class Job:
    """One claimed message on its way to the server."""

    attempt: Attempt
    done: Callable[[], None]
    held_until: float  # monotonic: the claim surely holds until then
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
        self._halted: TransportUnavailable | None = None  # set by the first sender refused
        self._threads = [
            threading.Thread(target=self._serve, args=(t,), name=f"smtp-{i}", daemon=True)
            for i, t in enumerate(transports)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self, attempt: Attempt, done: Callable[[], None], held: Callable[[], float | None]
    ) -> bool:
        """Send `attempt` on the next free connection; `done` is called once it is recorded.

        Once a connection is free, `held` says until when (monotonic clock) the
        run surely holds the claim, or None if it lost it (its lease ran out while
        the run was held up): then the message is not sent and counts as busy. A
        message whose final dot would come after that time is withdrawn. False
        (nothing sent) when a stop was asked for meanwhile. Raises
        TransportUnavailable (after recording everything in flight) once a
        connection found the server unreachable or refusing the session.
        """
        if self._unavailable is None:
            while self._in_flight >= 2 * self.connections:
                self._collect()
        if self._unavailable is not None:
            self.drain()
        if self.stop is not None and self.stop():
            return False
        until = held()
        if until is None:
            self.report.busy += 1
            done()
            return True
        self._inbox.put(Job(attempt, done, until))
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
        previous: Job | None = None
        with transport:
            while True:
                job = self._inbox.get()
                if job is None:
                    return
                gate = _gate(previous, job, self.stop)
                halted = self._halted
                if halted is not None:
                    error: Exception | None = halted  # the server refused: send nothing more
                else:
                    try:
                        error = send_one(transport, job.attempt.message, gate)
                    except Exception as exc:  # a bug in a transport: recorded, raised by the run
                        error = exc
                    if isinstance(error, TransportUnavailable):
                        self._halted = error
                if previous is not None:
                    previous.recorded.wait()  # answers are recorded in the order they came
                self._results.put((job, error))
                previous = job


def _gate(previous: Job | None, job: Job, stop: Callable[[], bool] | None) -> Callable[[], None]:
    """What must hold before `job`'s final dot: the previous answer recorded, the claim
    live, and no stop asked for (a stopping run finishes only what is past its dot)."""

    def gate() -> None:
        if previous is not None:
            previous.recorded.wait()
        if time.monotonic() > job.held_until:
            raise Withdrawn("not sent: the claim ran out before the message could go")
        if stop is not None and stop():
            raise Withdrawn("not sent: the run was stopped first", lost_claim=False)

    return gate
