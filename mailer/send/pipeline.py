"""SMTP round-trips overlapped with the run's own work: each connection sends from its own thread.

The run's thread claims and records; builder threads compose (and sign) each claimed
message at once; each sender thread owns one
transport (one SMTP connection) and only talks to the server. While the run
records a sender's last answer, the sender already sends the next message's
envelope and content, but holds back its final dot until that answer is
committed: a crash leaves at most one accepted-but-unrecorded message per open
connection (docs/guarantees.md). The answers that arrive together are committed together.

Connections are grouped in lanes, one per relay (mailer.relays), used in order:
a message goes to the first lane that is up and has quota left. A lane whose
relay refuses the session is closed and its messages go to the next lane; only
when every lane is closed or out of quota does the run stop (exit 75).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailer.errors import TransportUnavailable
from mailer.send.attempt import Attempt, record_results, send_one
from mailer.send.context import RunState
from mailer.send.pacing import Pacer
from mailer.transport.base import Transport, Withdrawn

if TYPE_CHECKING:
    from mailer.content.message import Outgoing

BUILDERS = 2  # threads building messages ahead of the connections
# Messages in flight beyond each connection's two (the one it sends, the next one waiting):
# with few connections, the builders would otherwise get only the time of one answer
# to build the next message, and a DKIM signature would land on the run's critical path.
AHEAD = 2 * BUILDERS


@dataclass
class Job:
    """One claimed message on its way to the server."""

    attempt: Attempt
    done: Callable[[], None]
    held_until: float  # monotonic: the claim surely holds until then
    lane: Lane | None = None
    recorded: threading.Event = field(default_factory=threading.Event)
    built: Future[Outgoing] | None = None  # the message, being built ahead of its connection

    def message(self) -> Outgoing:
        """The message, from the builders if they took it (their error, if any, raised)."""
        return self.built.result() if self.built is not None else self.attempt.outgoing()


@dataclass
class Lane:
    """The connections to one relay, its pace, and what is left of its daily quota."""

    name: str
    transports: Sequence[Transport]
    rate: float = 0.0
    daily: int | None = None  # None: no quota
    allowance: int = 0  # quota reserved by this run and not used yet
    down: TransportUnavailable | None = None  # the relay refused: closed for this run
    exhausted: bool = False  # the day's quota is used up
    inbox: queue.SimpleQueue[Job | None] = field(default_factory=queue.SimpleQueue)
    pacer: Pacer = field(init=False)

    def __post_init__(self) -> None:
        self.pacer = Pacer(self.rate)

    @property
    def usable(self) -> bool:
        return self.down is None and not self.exhausted


Result = tuple[Job, Exception | None]
Reserve = Callable[[Lane], int]  # reserves more quota for a lane (in the run's thread)


class Pipeline:
    """Sends through the lanes' transports (one thread each); records answers in `session`."""

    def __init__(
        self, state: RunState, lanes: Sequence[Lane], reserve: Reserve | None = None
    ) -> None:
        self.state = state
        self.lanes = list(lanes)
        self.reserve = reserve
        self._results: queue.SimpleQueue[Result] = queue.SimpleQueue()
        self._in_flight = 0
        self._unavailable: TransportUnavailable | None = None
        self._threads = [
            threading.Thread(target=self._serve, args=(lane, t), name=f"smtp-{lane.name}-{i}")
            for lane in self.lanes
            for i, t in enumerate(lane.transports)
        ]
        for thread in self._threads:
            thread.daemon = True
            thread.start()
        # Messages are built (and DKIM-signed) as soon as they are submitted, by a few
        # builder threads, so a connection finds its next message ready instead of building
        # it between its answer and its next transaction.
        self._builders = ThreadPoolExecutor(BUILDERS, thread_name_prefix="build")

    @property
    def connections(self) -> int:
        """Connections of the lanes still in use."""
        return sum(len(lane.transports) for lane in self.lanes if lane.usable) or 1

    def submit(
        self, attempt: Attempt, done: Callable[[], None], held: Callable[[], float | None]
    ) -> bool:
        """Send `attempt` on the next free connection; `done` is called once it is recorded.

        Once a connection is free, `held` says until when (monotonic clock) the
        run surely holds the claim, or None if it lost it (its lease ran out while
        the run was held up): then the message is not sent and counts as busy. A
        message whose final dot would come after that time is withdrawn. False
        (nothing sent) when a stop was asked for meanwhile. Raises
        TransportUnavailable (after recording everything in flight) once no
        relay takes mail: every one refused the session or used its quota.
        """
        if self._unavailable is None:
            while self._in_flight >= 2 * self.connections + AHEAD:
                self._collect()
        if self._unavailable is not None:
            self.drain()
        if self.state.stopping():
            return False
        until = held()
        if until is None:
            self.state.report.busy += 1
            done()
            return True
        job = Job(attempt, done, until, built=self._builders.submit(attempt.outgoing))
        if not self._route(job):
            self.drain()  # raises: nothing takes mail any more
        self._in_flight += 1
        return True

    def drain(self) -> None:
        """Wait for every message in flight and record it; raise TransportUnavailable if seen."""
        self.settle()
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
            for lane in self.lanes:
                for _ in lane.transports:
                    lane.inbox.put(None)
            for thread in self._threads:
                thread.join(timeout=60)
            self._builders.shutdown(cancel_futures=True)

    def _route(self, job: Job) -> bool:
        """Put `job` in the first lane that takes mail; False (and the reason kept) if none."""
        for lane in self.lanes:
            if not lane.usable:
                continue
            if lane.daily is not None and lane.allowance <= 0:
                lane.allowance += self.reserve(lane) if self.reserve else lane.daily
                if lane.allowance <= 0:
                    lane.exhausted = True
                    continue
            if lane.daily is not None:
                lane.allowance -= 1
            job.lane = lane
            lane.inbox.put(job)
            return True
        if self._unavailable is None:
            self._unavailable = self._why_none()
        return False

    def _why_none(self) -> TransportUnavailable:
        down = [lane.down for lane in self.lanes if lane.down is not None]
        if len(self.lanes) == 1 and down:
            return down[0]
        reasons = [
            f"{lane.name}: {'daily quota used up' if lane.exhausted else lane.down}"
            for lane in self.lanes
        ]
        return TransportUnavailable("no relay takes mail now (" + "; ".join(reasons) + ")")

    def _collect(self) -> None:
        """Record the next answer and any others already in; one commit for all of them.

        A message refused with its relay's session goes to the next relay instead.
        """
        results = [self._results.get()]
        while True:
            try:
                results.append(self._results.get_nowait())
            except queue.Empty:
                break
        answered: list[Result] = []
        for job, error in results:
            if isinstance(error, TransportUnavailable) and job.lane is not None:
                if job.lane.daily is not None:
                    job.lane.allowance += 1  # it never reached that relay
                job.recorded.set()  # this connection is done with it
                retry = Job(job.attempt, job.done, job.held_until, built=job.built)
                if self._route(retry):
                    continue
            answered.append((job, error))
        if not answered:
            return
        try:
            for _, error in answered:
                if isinstance(error, TransportUnavailable) and self._unavailable is None:
                    self._unavailable = error
            state = self.state
            record_results(
                state.session, [(j.attempt, e) for j, e in answered], state.now, state.report
            )
            state.session.commit()
            for job, _ in answered:
                job.done()
        finally:
            self._in_flight -= len(answered)
            for job, _ in answered:
                job.recorded.set()

    def _serve(self, lane: Lane, transport: Transport) -> None:
        previous: Job | None = None
        with transport:
            while True:
                job = lane.inbox.get()
                if job is None:
                    return
                gate = _gate(previous, job, self.state.stopping)
                down = lane.down
                if down is not None:
                    error: Exception | None = down  # the relay refused: send nothing more
                else:
                    lane.pacer.wait()
                    try:
                        error = send_one(transport, job.message(), gate)
                    except Exception as exc:  # a bug in a transport: recorded, raised by the run
                        error = exc
                    if isinstance(error, TransportUnavailable):
                        lane.down = error
                if previous is not None:
                    previous.recorded.wait()  # answers are recorded in the order they came
                self._results.put((job, error))
                previous = job


def _gate(previous: Job | None, job: Job, stop: Callable[[], bool]) -> Callable[[], None]:
    """What must hold before `job`'s final dot: the previous answer recorded, the claim
    live, and no stop asked for (a stopping run finishes only what is past its dot)."""

    def gate() -> None:
        if previous is not None:
            previous.recorded.wait()
        if time.monotonic() > job.held_until:
            raise Withdrawn("not sent: the claim ran out before the message could go")
        if stop():
            raise Withdrawn("not sent: the run was stopped first", lost_claim=False)

    return gate
