"""The one batch loop of a send run, over each source of due mail (lessons, queued notices).

A source reads the next page of due work (locked on PostgreSQL with SKIP
LOCKED, so concurrent runs take disjoint pages), picks what may go now,
claims it in one statement and hands each claimed message to the outlet.
The loop owns what every source shares: the dry run, the stop between
messages, the rollback after a failed statement, and giving back the
claims a stopping run did not use (docs/guarantees.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.exc import DBAPIError

from mailer.ledger.batch import Batch, new_batch
from mailer.send.context import Sending

PAGE = 50  # messages claimed at a time: small, so concurrent runs share the work evenly
STOPPED_FIRST = "not sent: the run stopped first"

Row = TypeVar("Row")
Item = TypeVar("Item")


class Source(Protocol, Generic[Row, Item]):
    """One kind of due mail, as the batch loop asks for it."""

    def fetch(self, run: Sending, after: Any, limit: int) -> Sequence[Row]:
        """The next `limit` due rows after the cursor `after` (None: from the start)."""

    def cursor(self, row: Row) -> Any:
        """Where the next page starts: the ordering key of `row`."""

    def wanted(self, run: Sending, rows: Sequence[Row]) -> list[Item]:
        """The rows that may go now (the others are counted as waiting)."""

    def predict(self, run: Sending, items: list[Item]) -> None:
        """Dry run: count what a real run would do with `items`."""

    def claim(self, run: Sending, batch: Batch, items: list[Item]) -> dict[int, Any]:
        """Claim `items` into `batch` (one statement); commits."""

    def submit(self, run: Sending, batch: Batch, item: Item, claims: dict[int, Any]) -> bool:
        """Hand one claimed item to the outlet; False when the run is stopping instead."""


def send_source(run: Sending, source: Source[Any, Any]) -> bool:
    """Send everything due from `source`, page by page; False when told to stop."""
    after: Any = None
    while True:
        rows = source.fetch(run, after, PAGE)
        if not rows:
            run.session.commit()
            return True
        after = source.cursor(rows[-1])
        if not _page(run, source, rows):
            return False


def _page(run: Sending, source: Source[Any, Any], rows: Sequence[Any]) -> bool:
    """Claim and send one page; False when the run was asked to stop."""
    items = source.wanted(run, rows)
    if run.report.dry_run:
        run.session.commit()
        source.predict(run, items)
        return True
    policy = run.policy
    batch = new_batch(policy.owner, policy.lease, exclusive=policy.exclusive)
    claims = source.claim(run, batch, items)
    try:
        for item in items:
            if run.state.stopping():
                run.outlet.drain()
                return False
            run.step()
            if not source.submit(run, batch, item, claims):
                run.outlet.drain()
                return False
        run.outlet.drain()
    except DBAPIError:
        run.session.rollback()  # a failed statement aborts the transaction: start afresh
        raise
    finally:
        run.outlet.settle()
        batch.release_rest(run.session, run.now, STOPPED_FIRST)
    return True


def spent(batch: Batch, delivery_id: int) -> Callable[[], None]:
    """The claim is used up once its outcome is recorded."""
    return lambda: batch.done(delivery_id)


def held(run: Sending, batch: Batch, delivery_id: int) -> Callable[[], float | None]:
    """Until when the run surely holds the claim (asked right before the message goes)."""
    return lambda: batch.hold(run.session, delivery_id)
