"""The schedule (docs/scheduling.md): send windows in local time, and when each lesson is due."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from mailer.errors import ConfigError, InvalidInput

LESSON_SPACING_DAYS = 7
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class SendWindow:
    """A daily local-time interval [start, end); it may cross midnight (22:00-06:00).

    start == end means the whole day ('00:00-24:00').
    """

    start: time
    end: time

    @classmethod
    def parse(cls, text: str, setting: str = "send_window") -> SendWindow:
        """Parse 'HH:MM-HH:MM' (errors name `setting`)."""
        m = _WINDOW.match(text)
        if not m:
            raise ConfigError(f"{setting} {text!r} is not of the form HH:MM-HH:MM")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise ConfigError(f"{setting} {text!r} has an impossible time of day")
        end = time(0, 0) if h2 == 24 else time(h2, m2)
        if (h1, m1) == (end.hour, end.minute) and h2 != 24:
            raise ConfigError(f"{setting} {text!r} is empty")
        return cls(time(h1, m1), end)

    def __str__(self) -> str:
        end = "24:00" if self.end == time(0, 0) else f"{self.end:%H:%M}"
        return f"{self.start:%H:%M}-{end}"

    def contains(self, local: time) -> bool:
        """True when the local wall-clock time is inside the window."""
        t = local.replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def opens_on(self, day: date, zone: ZoneInfo) -> datetime:
        """The instant (UTC) the window opens on local calendar date `day`."""
        return datetime.combine(day, self.start, tzinfo=zone).astimezone(UTC)

    def next_opening(self, instant: datetime, zone: ZoneInfo) -> datetime:
        """The start of the first window that begins at or after `instant` (UTC)."""
        local_day = instant.astimezone(zone).date()
        opening = self.opens_on(local_day, zone)
        if opening < instant:
            opening = self.opens_on(local_day + timedelta(days=1), zone)
        return opening

    def is_open(self, instant: datetime, zone: ZoneInfo) -> bool:
        """True when `instant` falls inside the window in `zone`."""
        return self.contains(instant.astimezone(zone).time())


class TimeOfDay(enum.StrEnum):
    """When a subscriber reads: the morning window (`send_window`) or `evening_window`."""

    MORNING = "morning"
    EVENING = "evening"


@dataclass(frozen=True)
class Windows:
    """The send windows a subscriber may choose between; each subscriber's own replaces
    `send_window` wherever a window is used (docs/scheduling.md)."""

    morning: SendWindow
    evening: SendWindow

    def of(self, time_of_day: str | None) -> SendWindow:
        """The window of a subscriber who chose `time_of_day` (morning unless evening)."""
        return self.evening if time_of_day == TimeOfDay.EVENING else self.morning


def first_lesson_due(start: datetime, window: SendWindow, zone: ZoneInfo) -> datetime:
    """Rule 1: lesson 1 is due when the first window at or after the start opens."""
    return window.next_opening(start, zone)


def next_lesson_due(sent: datetime, window: SendWindow, zone: ZoneInfo) -> datetime:
    """Rule 2: the next lesson is due when the window opens 7 local days after `sent`'s date."""
    sent_day = sent.astimezone(zone).date()
    return window.opens_on(sent_day + timedelta(days=LESSON_SPACING_DAYS), zone)


def resumed_due(
    earliest: datetime | None, now: datetime, window: SendWindow, zone: ZoneInfo
) -> datetime:
    """Rule 5: after resume, the next window, never earlier than rule 2's `earliest`."""
    opening = window.next_opening(now, zone)
    return max(opening, earliest) if earliest is not None else opening


def moved_due(
    due: datetime, zone: ZoneInfo, window: SendWindow, new_zone: ZoneInfo, now: datetime
) -> datetime:
    """A new time zone or time of day: the lesson keeps its local date (in the old `zone`)
    and moves to the start of `window` on that date in `new_zone`; due at once (`now`) if
    that instant has passed."""
    return max(window.opens_on(due.astimezone(zone).date(), new_zone), now)


def week_later(due: datetime, zone: ZoneInfo, weeks: int = 1) -> datetime:
    """A week off: the same local time, 7 local calendar days later (rule 6: never by hours)."""
    local = due.astimezone(zone)
    later = local.date() + timedelta(days=LESSON_SPACING_DAYS * weeks)
    return datetime.combine(later, local.time(), tzinfo=zone).astimezone(UTC)


def parse_instant(text: str, what: str = "time") -> datetime:
    """Parse an ISO-8601 instant that carries a UTC offset; return it in UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{what} {text!r} is not an ISO-8601 instant such as 2026-03-02T09:30:00+00:00"
        ) from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"{what} {text!r} needs a UTC offset, e.g. 2026-03-02T09:30:00+00:00")
    return parsed.astimezone(UTC)
