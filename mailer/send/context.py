"""What one send run shares between its parts: the state of the run, its policy, its outlet."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.orm import Session

from mailer.ledger.rules import LEASE
from mailer.send.pacing import Pacer
from mailer.send.report import SendReport

if TYPE_CHECKING:
    from mailer.content.compose import Composer
    from mailer.send.attempt import Attempt
    from mailer.timing import Windows

StopFlag = Callable[[], bool]


@dataclass
class RunState:
    """The run's database session, its clock, its report so far, and whether to stop."""

    session: Session
    now: datetime  # the schedule's "now" (--now), not the wall clock
    report: SendReport
    stop: StopFlag | None = None

    def stopping(self) -> bool:
        """True once a graceful stop was asked for."""
        return bool(self.stop and self.stop())


@dataclass(frozen=True)
class SendPolicy:
    """How a run sends: inside which windows (each subscriber's own), how fast, and how it
    holds its claims."""

    windows: Windows
    rate: float = 0.0  # messages per second for the whole run, 0: no limit
    lease: timedelta = LEASE  # how long a claim holds (claim_lease)
    owner: str | None = None  # names this run's claims (mailer.send.runlock)
    exclusive: bool = False  # this run's lock keeps every other send run out (SQLite)


class Outlet(Protocol):
    """Sends attempts and records their outcome (mailer.send.pipeline.Pipeline)."""

    def submit(
        self, attempt: Attempt, done: Callable[[], None], held: Callable[[], float | None]
    ) -> bool:
        """Send `attempt` while `held()` says the claim holds; `done` once recorded; False: stop."""

    def drain(self) -> None:
        """Wait until every submitted attempt is recorded; raise TransportUnavailable if seen."""

    def settle(self) -> None:
        """Like drain, without raising (for clean-up after another error)."""


@dataclass
class Sending:
    """One run's sending parts, handed to each source of due mail (mailer.send.batches)."""

    state: RunState
    outlet: Outlet
    make_composer: Callable[[], Composer]  # called once, when the first message is due
    policy: SendPolicy
    progress: Callable[[int], None] | None = None
    pacer: Pacer = field(init=False)

    def __post_init__(self) -> None:
        self.pacer = Pacer(self.policy.rate)

    @cached_property
    def composer(self) -> Composer:
        """The run's composer, built on first use."""
        return self.make_composer()

    @property
    def session(self) -> Session:
        """The run's database session."""
        return self.state.session

    @property
    def now(self) -> datetime:
        """The run's clock."""
        return self.state.now

    @property
    def report(self) -> SendReport:
        """What the run has done so far."""
        return self.state.report

    def step(self) -> None:
        """One unit of work done (for the progress bar)."""
        if self.progress:
            self.progress(1)
