"""A `send` run as cron and the daemon do it: deliver what is due and record how it went."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from mailer.errors import DatabaseUnavailable, RekindleError, TransportUnavailable
from mailer.ledger import claims
from mailer.ledger import rows as ledger
from mailer.runtime import Runtime
from mailer.send import lessons as dispatch
from mailer.send import quota, runlock
from mailer.send.attempt import Pacer, Sending, SendReport
from mailer.send.pipeline import Lane, Pipeline
from mailer.store.models import Run

ABORTED = {"40001", "40P01"}  # serialization failure, deadlock: transient, not "unreachable"
KEEP_RUNS = 1000  # older run records are pruned
LOCK_WAIT = 5.0  # seconds an overlapping run on SQLite waits before leaving it to the other
StopFlag = Callable[[], bool]


def send_run(
    rt: Runtime,
    now: datetime,
    *,
    dry_run: bool = False,
    progress: Any = None,
    stop: StopFlag | None = None,
    connections: int | None = None,
) -> SendReport:
    """Deliver everything due at `now` through the configured transport; record the run.

    `progress` is a click progress bar (or None); `stop` is asked between
    messages and ends the run early (the message in flight finishes first).
    Raises TransportUnavailable (exit 75) with `.report` attached.
    """
    try:
        return _send_run(
            rt, now, dry_run=dry_run, progress=progress, stop=stop, connections=connections
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
    rt: Runtime,
    now: datetime,
    *,
    dry_run: bool,
    progress: Any,
    stop: StopFlag | None,
    connections: int | None,
) -> SendReport:
    if dry_run:
        guard = runlock.RunLock("dry-run")
    else:
        try:
            guard = runlock.acquire(rt.engine, LOCK_WAIT)
        except runlock.RunBusy as busy:
            holder = f" ({busy.holder})" if busy.holder else ""
            return SendReport(skipped=f"another send run is active{holder}")
    with guard, rt.pinned_session() as session:
        make_composer = rt.composer_later(session)
        report = SendReport(dry_run=dry_run)
        run = None
        if not dry_run:
            report.recovered = claims.recover(session, guard.alive(session), now)
            run = _start(session, now)
        usage = _Usage(rt, session)
        lanes = _lanes(rt, 1 if dry_run else connections or rt.settings.smtp_connections)
        pipeline = Pipeline(session, lanes, now, report, stop=stop, reserve=usage.reserve)
        try:
            if progress is not None:
                progress.length = dispatch.count_due(session, now)
            dispatch.send_due(
                Sending(
                    session,
                    pipeline,
                    make_composer,
                    rt.settings.send_window,
                    now,
                    report,
                    Pacer(rt.settings.rate_limit),
                    owner=guard.owner,
                    lease=timedelta(seconds=rt.settings.claim_lease),
                    exclusive=guard.exclusive,
                    stop=stop,
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


def _lanes(rt: Runtime, connections: int) -> list[Lane]:
    """One lane per relay in `smtp_url` (or the outbox), each with its connections."""
    relays = rt.settings.relays
    if not relays:
        return [Lane("outbox", [rt.transport() for _ in range(connections)])]
    return [
        Lane(
            relay.name,
            [rt.transport(relay) for _ in range(relay.connections or connections)],
            relay.rate,
            relay.daily,
        )
        for relay in relays
    ]


class _Usage:
    """Relay quotas for one run: reserved in blocks, the unused part given back at the end."""

    def __init__(self, rt: Runtime, session: Session) -> None:
        self.session = session
        self.day = quota.today()

    def reserve(self, lane: Lane) -> int:
        assert lane.daily is not None
        return quota.reserve(self.session, lane.name, lane.daily)

    def give_back(self, lanes: list[Lane]) -> None:
        for lane in lanes:
            if lane.daily is not None and lane.allowance > 0:
                self.session.rollback()
                quota.give_back(self.session, lane.name, self.day, lane.allowance)
                lane.allowance = 0


def _start(session: Session, now: datetime) -> Run:
    run = Run(started_at=ledger.wall_clock(), clock=now, outcome="running", sent=0, failed=0)
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
    run.finished_at = ledger.wall_clock()
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
