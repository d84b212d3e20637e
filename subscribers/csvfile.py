"""CSV import (row by row, with line numbers and reasons) and CSV export of subscribers."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from subscribers.errors import InvalidInput
from subscribers.validation import check_timezone, clean_name, normalize_email

COLUMNS = ("email", "name", "timezone")


@dataclass(frozen=True)
class Row:
    """One valid CSV row, already validated and normalised."""

    line: int
    email: str
    name: str | None
    timezone: str | None


@dataclass(frozen=True)
class BadRow:
    """One rejected CSV row: where it is and why it was rejected."""

    line: int
    reason: str


def read_rows(stream: IO[str]) -> Iterator[Row | BadRow]:
    """Yield each data row of a subscriber CSV as a Row or a BadRow.

    Raises InvalidInput when the file as a whole cannot be read (no header,
    no `email` column). Duplicate addresses within the file are BadRows.
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
    index = {name: columns.index(name) for name in COLUMNS if name in columns}
    seen: dict[str, int] = {}
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
        yield _parse(start, cells, index, seen)


def _parse(
    line: int, cells: list[str], index: dict[str, int], seen: dict[str, int]
) -> Row | BadRow:
    def cell(name: str) -> str:
        i = index.get(name)
        return cells[i].strip() if i is not None and i < len(cells) else ""

    try:
        email = normalize_email(cell("email"))
        name = clean_name(cell("name"))
        timezone = check_timezone(cell("timezone")) if cell("timezone") else None
    except InvalidInput as exc:
        return BadRow(line, str(exc))
    first = seen.setdefault(email.lower(), line)
    if first != line:
        return BadRow(line, f"duplicate of line {first} ({email})")
    return Row(line, email, name, timezone)


def neutralize(cell: object) -> str:
    """Text for a CSV cell that a spreadsheet will not run as a formula."""
    text = "" if cell is None else str(cell)
    if text and text[0] in "=+-@\t\r":
        return "'" + text
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
