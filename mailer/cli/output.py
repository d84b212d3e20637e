"""Printing helpers shared by the commands: JSON, tables, progress bars."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import click


def print_json(value: Any) -> None:
    """Pretty, stable JSON on stdout."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain aligned table on stdout."""
    cells = [[("" if c is None else str(c)) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    click.echo(line.rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def interactive() -> bool:
    """True when a person is watching (stderr is a terminal), false under cron."""
    return sys.stderr.isatty()


def warn(message: str) -> None:
    """A one-line warning on stderr."""
    click.echo(f"Warning: {message}", err=True)


def log_to_stderr(fmt: str, *also: str) -> None:
    """Send rekindle's own log lines (and those of the loggers `also` names) to stderr.

    Other libraries (Alembic, flufl.bounce) only get to warn.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    for name in ("rekindle", *also):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # flufl.bounce logs a traceback whenever one of its heuristic detectors trips on an
    # odd report; rekindle already logs the outcome in one line.
    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
