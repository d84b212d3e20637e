"""Message keys: the one type that builds, reads and matches the ledger's (subscriber, key) names.

Every message to a subscriber is one ledger row per key (docs/guarantees.md):
`lesson-N` and `reminder-N` (week N), `broadcast-N` (broadcast id N),
`confirm` and `welcome`. When a course is taken again, the rows of the earlier
round are kept in the history under `r<round>/<key>`. Adding a notice kind
means adding it here (its kind, whether it waits for the send window, how long
it may wait) and nowhere else.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, String, and_, cast, literal, not_, or_

_KEY = re.compile(r"\A(?:r([1-9][0-9]{0,5})/)?([a-z]+)(?:-([1-9][0-9]{0,9}))?\Z")


class Kind(enum.StrEnum):
    """What a message is."""

    LESSON = "lesson"  # the week's letter, due from the subscriber's course cursor
    REMINDER = "reminder"  # a lesson's mid-week nudge
    BROADCAST = "broadcast"  # a one-off newsletter
    CONFIRM = "confirm"  # double opt-in confirmation
    WELCOME = "welcome"  # sent once the subscription is confirmed


NUMBERED = frozenset({Kind.LESSON, Kind.REMINDER, Kind.BROADCAST})
# Queued messages that go out only inside the subscriber's send window.
WINDOWED = frozenset({Kind.REMINDER, Kind.BROADCAST})
# How long a queued message may wait to go out before it is given up.
LIFETIME = {Kind.CONFIRM: timedelta(days=2), Kind.WELCOME: timedelta(days=2)}
DEFAULT_LIFETIME = timedelta(days=6)


@dataclass(frozen=True, slots=True)
class MessageKey:
    """One message's ledger key: its kind, its number (week or broadcast id), its round."""

    kind: Kind
    number: int | None = None
    round: int | None = None  # None: the current round; n: filed away from round n

    def __post_init__(self) -> None:
        if (self.kind in NUMBERED) != (self.number is not None):
            raise ValueError(
                f"a {self.kind} key {'needs' if self.number is None else 'has no'} number"
            )

    @classmethod
    def parse(cls, text: str) -> MessageKey:
        """The key a ledger string names; ValueError for anything else."""
        found = _KEY.match(text)
        if found is None:
            raise ValueError(f"not a message key: {text!r}")
        round_, kind, number = found.groups()
        try:
            return cls(Kind(kind), int(number) if number else None, int(round_) if round_ else None)
        except ValueError:
            raise ValueError(f"not a message key: {text!r}") from None

    @classmethod
    def read(cls, text: str) -> MessageKey | None:
        """The key a ledger string names, or None."""
        try:
            return cls.parse(text)
        except ValueError:
            return None

    def __str__(self) -> str:
        return _format(self.kind, self.number, self.round)

    @property
    def week(self) -> int | None:
        """The course week of a lesson or reminder (None for other kinds)."""
        return self.number if self.kind in (Kind.LESSON, Kind.REMINDER) else None

    @property
    def windowed(self) -> bool:
        """Queued, it waits for the subscriber's send window (reminders, broadcasts)."""
        return self.kind in WINDOWED

    @property
    def lifetime(self) -> timedelta:
        """How long a queued message may wait before it is given up."""
        return LIFETIME.get(self.kind, DEFAULT_LIFETIME)

    def archived(self, round_: int) -> MessageKey:
        """This key as filed away in the history of course round `round_` (`r<n>/<key>`)."""
        return MessageKey(self.kind, self.number, round_)

    @property
    def current(self) -> MessageKey:
        """This key in the current round (its name without the `r<n>/` prefix)."""
        return MessageKey(self.kind, self.number)


@cache
def _format(kind: Kind, number: int | None, round_: int | None) -> str:
    text = f"{kind}-{number}" if number is not None else str(kind)
    return text if round_ is None else f"r{round_}/{text}"


def lesson(week: int) -> str:
    """The ledger key of week `week`'s lesson."""
    return _format(Kind.LESSON, week, None)


def reminder(week: int) -> str:
    """The ledger key of week `week`'s mid-week nudge."""
    return _format(Kind.REMINDER, week, None)


def broadcast(broadcast_id: int) -> str:
    """The ledger key of broadcast `broadcast_id`."""
    return _format(Kind.BROADCAST, broadcast_id, None)


@cache
def in_round(key: str, round_: int) -> str:
    """`key` as its Message-ID names it in course round `round_` (`r<n>/<key>` from the
    second round on, so a course taken again gets new Message-IDs)."""
    return key if round_ == 1 else str(MessageKey.parse(key).archived(round_))


def lesson_sql(week: Any) -> Any:
    """SQL: the key of the lesson whose week is the expression `week`."""
    return literal(f"{Kind.LESSON}-") + cast(week, String)


CONFIRM = str(Kind.CONFIRM)
WELCOME = str(Kind.WELCOME)


def of_kind(column: Any, kind: Kind, *, any_round: bool = False) -> ColumnElement[bool]:
    """SQL: `column` holds a key of `kind` (this round only, unless `any_round`)."""
    pattern = f"{kind}-%" if kind in NUMBERED else str(kind)
    this_round = column.like(pattern) if kind in NUMBERED else column == pattern
    if not any_round:
        return this_round
    return or_(this_round, column.like(f"r%/{pattern}"))


def not_of_kind(column: Any, kind: Kind) -> ColumnElement[bool]:
    """SQL: `column` holds a key of another kind (this round)."""
    return not_(of_kind(column, kind))


def windowed(column: Any) -> ColumnElement[bool]:
    """SQL: `column` holds a key that waits for the send window."""
    return or_(*(of_kind(column, kind) for kind in sorted(WINDOWED)))


def in_current_round(column: Any) -> ColumnElement[bool]:
    """SQL: `column` holds a key of the current round (not the history)."""
    return and_(not_(column.like("r%/%")))


def sort_key(text: str) -> tuple[str, int]:
    """Order keys naturally, by kind (and round) and then number: lesson-2 before lesson-10."""
    key = MessageKey.read(text)
    if key is None or key.number is None:
        return (text, 0)
    kind = str(key.kind) if key.round is None else f"r{key.round}/{key.kind}"
    return (kind, key.number)
