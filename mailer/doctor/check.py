"""One doctor verdict: a name, ok / warning / problem, what was found, and the one-line fix."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any


class Verdict(enum.StrEnum):
    """How a check came out; only a problem makes `doctor` exit 1."""

    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"


@dataclass(frozen=True)
class Check:
    """The outcome of one check; `fix` is None when there is nothing to do."""

    name: str
    status: Verdict
    detail: str
    fix: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The check as `doctor --json` prints it."""
        return {**asdict(self), "status": str(self.status)}


def ok(name: str, detail: str) -> Check:
    """A check that passed."""
    return Check(name, Verdict.OK, detail)


def warning(name: str, detail: str, fix: str) -> Check:
    """Works, but costs inbox placement or may break later."""
    return Check(name, Verdict.WARNING, detail, fix)


def problem(name: str, detail: str, fix: str) -> Check:
    """Mail will be refused, go to spam, or break the law; `doctor` exits 1."""
    return Check(name, Verdict.PROBLEM, detail, fix)
