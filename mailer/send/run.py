"""A `send` run as cron and the daemon do it: deliver what is due and record how it went.

The run takes the lock that says who is alive (mailer.send.runlock), hands
back the claims of runs that died, opens the pipeline over the relays'
lanes, and lets `send_due` work through what is due (docs/guarantees.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from mailer.errors import DatabaseUnavailable, RekindleError, TransportUnavailable
from mailer.ledger.recover import recover
from mailer.ledger.rules import wall_clock
from mailer.send import quota, runlock
from mailer.send.context import RunState, Sending, SendPolicy, StopFlag
from mailer.send.due import count_due, send_due
from mailer.send.pipeline import Lane, Pipeline
from mailer.send.report import SendReport
from mailer.store import db
from mailer.store.models import Run

if TYPE_CHECKING:
    from mailer.content.compose import Composer

ABORTED = {"40001", "40P01"}  # serialization failure, deadlock: transient, not "unreachable"
KEEP_RUNS = 1000  # older run records are pruned
LOCK_WAIT = 5.0  # seconds an overlapping run on SQLite waits before leaving it to the other
# Reads the installation's secret in the run's session; builds the composer when first called.
ComposerFor = Callable[[Session], Callable[[], "Composer"]]


def send_run(
    engine: Engine,
    lanes: Sequence[Lane],
    composer_for: ComposerFor,
    policy: SendPolicy,
    now: datetime,
    *,
    dry_run: bool = False,
    progress: Any = None,
    stop: StopFlag | None = None,
) -> SendReport:
    """Deliver everything due at `now` through `lanes` (one per relay); record the run.

    `progress` is a click progress bar (or None); `stop` is asked between
    messages and ends the run early (the message in flight finishes first).
    Raises TransportUnavailable (exit 75) with `.report` attached.
    """
    try:
        return _send_run(
            engine, lanes, composer_for, policy, now, dry_run=dry_run, progress=progress, stop=stop
        )
    except (OperationalError, InterfaceError) as exc:
        reason = " ".join(str(exc.orig or exc).split())[:300]
        if getattr(exc.orig, "sqlstate", None) in ABORTED:
            raise DatabaseUnavailable(
                f"the database aborted this run ({reason}); what was sent is recorded "
                "and the next run goes on"
            ) from None
        raise DatabaseUnavailable(f"the database cannot be reached: {reason}") from None


def _send_run(
    engine: Engine,
    lanes: Sequence[Lane],
    composer_for: ComposerFor,
    policy: SendPolicy,
    now: datetime,
    *,
    dry_run: bool,
    progress: Any,
    stop: StopFlag | None,
) -> SendReport:
    if dry_run:
        guard = runlock.RunLock("dry-run")
    else:
        try:
            guard = runlock.acquire(engine, LOCK_WAIT)
        except runlock.RunBusy as busy:
            holder = f" ({busy.holder})" if busy.holder else ""
            return SendReport(skipped=f"another send run is active{holder}")
    with guard, db.pinned_session(engine) as session:
        make_composer = composer_for(session)
        report = SendReport(dry_run=dry_run)
        run = None
        if not dry_run:
            report.recovered = recover(session, guard.alive(session), now)
            run = _start(session, now)
        usage = _Usage(session)
        state = RunState(session, now, report, stop)
        pipeline = Pipeline(state, lanes, reserve=usage.reserve)
        policy = replace(policy, owner=guard.owner, exclusive=guard.exclusive)
        try:
            if progress is not None:
                progress.length = count_due(session, now)
            send_due(
                Sending(
                    state,
                    pipeline,
                    make_composer,
                    policy,
                    progress=progress.update if progress is not None else None,
                )
            )
            pipeline.close()
            usage.give_back(lanes)
        except TransportUnavailable as exc:
            pipeline.close()
            usage.give_back(lanes)
            _finish(session, run, report, "unavailable", str(exc))
            raise
        except RekindleError as exc:
            pipeline.close()
            usage.give_back(lanes)
            _finish(session, run, report, "error", str(exc))
            raise
        except BaseException:
            pipeline.close()
            raise
        _finish(session, run, report, "ok", None)
        return report


class _Usage:
    """Relay quotas for one run: reserved in blocks, the unused part given back at the end."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.day = quota.today()

    def reserve(self, lane: Lane) -> int:
        assert lane.daily is not None
        return quota.reserve(self.session, lane.name, lane.daily)

    def give_back(self, lanes: Sequence[Lane]) -> None:
        for lane in lanes:
            if lane.daily is not None and lane.allowance > 0:
                self.session.rollback()
                quota.give_back(self.session, lane.name, self.day, lane.allowance)
                lane.allowance = 0


def _start(session: Session, now: datetime) -> Run:
    run = Run(started_at=wall_clock(), clock=now, outcome="running", sent=0, failed=0)
    run.deferred = 0
    session.add(run)
    session.commit()
    return run


def _finish(
    session: Session, run: Run | None, report: SendReport, outcome: str, message: str | None
) -> None:
    if run is None:
        return
    session.rollback()
    run.finished_at = wall_clock()
    run.outcome = outcome
    run.sent, run.failed, run.deferred = report.sent, report.failed, report.deferred
    run.message = message
    session.add(run)
    old = session.scalars(select(Run.id).order_by(Run.id.desc()).offset(KEEP_RUNS)).all()
    if old:
        session.execute(delete(Run).where(Run.id.in_(old)))
    session.commit()


def last_run(session: Session) -> Run | None:
    """The most recent run (finished or not)."""
    return session.scalar(select(Run).order_by(Run.id.desc()).limit(1))
