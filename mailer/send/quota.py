"""Daily relay quotas, counted in the database so that every worker shares them.

A run reserves a block of a relay's quota before using it and gives back what
it did not use when it ends. A run killed with a reservation in hand wastes
that part of the day's quota: the relay is never sent more than it allows.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailer.ledger.rules import wall_clock
from mailer.store.db import dialect_insert
from mailer.store.models import RelayUsage

BLOCK = 100  # messages reserved at a time


def today() -> date:
    """The quota day: the UTC date of the real clock."""
    return wall_clock().date()


def reserve(session: Session, relay: str, daily: int, want: int = BLOCK) -> int:
    """Reserve up to `want` of today's quota of `relay`; how many were granted; commits."""
    day = today()
    insert = dialect_insert(session.get_bind().dialect.name)
    session.execute(
        insert(RelayUsage).values(relay=relay, day=day, sent=0).on_conflict_do_nothing()
    )
    granted = 0
    for _ in range(5):  # another worker may take some in between: try again with what is left
        used = session.scalar(
            select(RelayUsage.sent).where(RelayUsage.relay == relay, RelayUsage.day == day)
        )
        take = min(want, daily - int(used or 0))
        if take <= 0:
            break
        taken = session.execute(
            update(RelayUsage)
            .where(
                RelayUsage.relay == relay,
                RelayUsage.day == day,
                RelayUsage.sent == used,
            )
            .values(sent=RelayUsage.sent + take)
            .returning(RelayUsage.sent)
        ).first()
        if taken is not None:
            granted = take
            break
    session.commit()
    return granted


def give_back(session: Session, relay: str, day: date, unused: int) -> None:
    """Return the part of a reservation that was not used; commits."""
    if unused > 0:
        session.execute(
            update(RelayUsage)
            .where(RelayUsage.relay == relay, RelayUsage.day == day)
            .values(sent=RelayUsage.sent - unused)
        )
        session.commit()
