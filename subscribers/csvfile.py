"""CSV import (row by row, with line numbers and reasons) and CSV export of subscribers."""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from subscribers.errors import InvalidInput
from subscribers.models import Status
from subscribers.validation import check_timezone, clean_name, normalize_email

# What import reads: the first three are the simple form; the rest, as `subscribers
# export` writes them, restore the consent record and the place in the course.
COLUMNS = (
    "email",
    "name",
    "timezone",
    "status",
    "created_at",
    "confirmed_at",
    "source",
    "next_lesson",
    "next_due",
    "time_of_day",
    "reminders",
)
TIMES_OF_DAY = ("morning", "evening")
# What export writes for the reminders switch (Python's True/False), and the other usual spellings.
SWITCH = {"true": True, "yes": True, "on": True, "1": True}
SWITCH |= {"false": False, "no": False, "off": False, "0": False}
STATUSES = {s.value: s for s in Status}
_SOURCE = re.compile(r"[a-z][a-z0-9_-]{0,15}")
# A cell a spreadsheet would run as a formula (after any quotes export already added).
_FORMULA = re.compile(r"'*[=+\-@\t\r]")
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)


@dataclass(frozen=True)
class Row:
    """One valid CSV row, already validated and normalised (None: not given)."""

    line: int
    email: str
    name: str | None
    timezone: str | None
    status: Status | None = None
    created_at: datetime | None = None
    confirmed_at: datetime | None = None
    source: str | None = None
    next_lesson: int | None = None
    next_due: datetime | None = None
    time_of_day: str | None = None  # the reader's choice on their course page
    reminders: bool | None = None


@dataclass(frozen=True)
class BadRow:
    """One rejected CSV row: where it is and why it was rejected."""

    line: int
    reason: str


def decode(data: bytes) -> str:
    """The text of a subscriber file: UTF-8 with or without a BOM, or UTF-16 with a BOM.

    Raises InvalidInput naming the first line that cannot be read, before anything
    is imported.
    """
    encoding, label = "utf-8", "UTF-8"
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            encoding, label = codec, name
            break
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].decode(encoding, "replace").count("\n") + 1
        raise InvalidInput(
            f"line {line}: bytes that are not {label} ({data[exc.start : exc.end]!r}); "
            "save the file as UTF-8 (or UTF-16 with a byte-order mark) and import it again"
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise InvalidInput(
            f"line {line}: the file holds NUL characters; if it is UTF-16 it needs a "
            "byte-order mark, or save it as UTF-8"
        )
    return text


def read_rows(
    stream: IO[str], *, now: datetime | None = None, lessons: int | None = None
) -> Iterator[Row | BadRow]:
    """Yield each data row of a subscriber CSV as a Row or a BadRow.

    Timestamps after `now` and a `next_lesson` past `lessons` are BadRows. Raises
    InvalidInput when the file as a whole cannot be read (no header, no `email`
    column). Duplicate addresses within the file are BadRows.
    """
    reader = csv.reader(stream, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidInput(
            "the CSV file is empty: expected a header line 'email,name,timezone'"
        ) from None
    except csv.Error as exc:
        raise InvalidInput(f"line 1: unreadable CSV header: {exc}") from None
    columns = [h.strip().lstrip("\ufeff").lower() for h in header]
    if "email" not in columns:
        raise InvalidInput(
            f"line 1: the header must name an 'email' column (got {','.join(header)!r})"
        )
    parse = _Parser(
        {name: columns.index(name) for name in COLUMNS if name in columns}, now, lessons
    )
    line = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                yield BadRow(
                    line,
                    "a quoted field opened on this line is never closed; "
                    "the rest of the file was not read",
                )
                return
            yield BadRow(line, f"unreadable CSV: {exc}")
            line = reader.line_num + 1
            continue
        start, line = line, reader.line_num + 1
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(columns):
            yield BadRow(start, f"{len(cells)} fields, but the header names {len(columns)}")
            continue
        yield parse(start, cells)


class _Parser:
    """Turns the cells of one data line into a Row or a BadRow saying why not."""

    def __init__(self, index: dict[str, int], now: datetime | None, lessons: int | None) -> None:
        self.index = index
        self.now = now
        self.lessons = lessons
        self.seen: dict[str, int] = {}

    def __call__(self, line: int, cells: list[str]) -> Row | BadRow:
        def cell(name: str) -> str:
            i = self.index.get(name)
            return unprotect(cells[i].strip()) if i is not None and i < len(cells) else ""

        try:
            email = normalize_email(cell("email"))
            row = Row(
                line,
                email,
                clean_name(cell("name")),
                check_timezone(cell("timezone")) if cell("timezone") else None,
                _status(cell("status")),
                self._consent_time(cell("created_at"), "created_at"),
                self._consent_time(cell("confirmed_at"), "confirmed_at"),
                _source(cell("source")),
                self._lesson(cell("next_lesson")),
                _instant(cell("next_due"), "next_due"),
                _time_of_day(cell("time_of_day")),
                _switch(cell("reminders"), "reminders"),
            )
        except InvalidInput as exc:
            return BadRow(line, str(exc))
        if row.created_at and row.confirmed_at and row.confirmed_at < row.created_at:
            return BadRow(line, "confirmed_at is earlier than created_at")
        first = self.seen.setdefault(email.lower(), line)
        if first != line:
            return BadRow(line, f"duplicate of line {first} ({email})")
        return row

    def _consent_time(self, text: str, column: str) -> datetime | None:
        """A consent timestamp: ISO-8601 with an offset, and not after the import."""
        value = _instant(text, column)
        if value is not None and self.now is not None and value > self.now:
            raise InvalidInput(f"{column} {text!r} is in the future")
        return value

    def _lesson(self, text: str) -> int | None:
        if not text:
            return None
        number = int(text) if text.isascii() and text.isdigit() else 0
        if number < 1 or (self.lessons is not None and number > self.lessons):
            upto = f" to {self.lessons}" if self.lessons is not None else " up"
            raise InvalidInput(f"next_lesson {text!r} is not a lesson number (1{upto})")
        return number


def _time_of_day(text: str) -> str | None:
    if not text:
        return None
    if text.lower() not in TIMES_OF_DAY:
        raise InvalidInput(f"time_of_day {text!r} must be morning or evening")
    return text.lower()


def _switch(text: str, column: str) -> bool | None:
    if not text:
        return None
    if text.lower() not in SWITCH:
        raise InvalidInput(f"{column} {text!r} must be true or false")
    return SWITCH[text.lower()]


def _status(text: str) -> Status | None:
    if not text:
        return None
    status = STATUSES.get(text.lower())
    if status is None:
        raise InvalidInput(f"unknown status {text!r} (one of: {', '.join(STATUSES)})")
    return status


def _source(text: str) -> str | None:
    if not text:
        return None
    if not _SOURCE.fullmatch(text):
        raise InvalidInput(
            f"source {text!r} is not a short lower-case word such as web, email or import"
        )
    return text


def _instant(text: str, column: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
    except ValueError:
        raise InvalidInput(
            f"{column} {text!r} is not an ISO-8601 time such as 2026-03-02T09:30:00+00:00"
        ) from None
    if value.tzinfo is None:
        raise InvalidInput(f"{column} {text!r} needs a UTC offset, e.g. 2026-03-02T09:30:00+00:00")
    return value.astimezone(UTC)


def neutralize(cell: object) -> str:
    """Text for a CSV cell that a spreadsheet will not run as a formula.

    A leading quote is added to a cell starting with = + - @ tab or CR, and to one
    that already starts with quotes before such a character, so `unprotect` can
    always take exactly one quote off again.
    """
    text = "" if cell is None else str(cell)
    if _FORMULA.match(text):
        return "'" + text
    return text


def unprotect(text: str) -> str:
    """Undo `neutralize`: drop the one quote it put before a formula-looking cell."""
    if text.startswith("'") and _FORMULA.match(text, 1):
        return text[1:]
    return text


def write_rows(stream: IO[str], header: Iterable[str], rows: Iterable[Iterable[object]]) -> int:
    """Write a header and rows as CSV with formula-neutralised cells; return the row count."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(list(header))
    count = 0
    for row in rows:
        writer.writerow([neutralize(c) for c in row])
        count += 1
    return count
