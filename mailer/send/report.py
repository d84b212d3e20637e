"""What one send run did: the figures of its summary line and of `send --json`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SendReport:
    """What one run did.

    `deferred`: messages this run tried that the server put off, now in the
    ledger state of that name (mailer.models.DeliveryStatus); what the run
    claimed but never tried goes back untouched and is not counted.
    """

    sent: int = 0
    failed: int = 0
    deferred: int = 0
    bounced: int = 0
    waiting: int = 0  # due, but outside the subscriber's send window or before a retry time
    busy: int = 0  # claimed by another run that is still sending
    recovered: int = 0  # claims of a run that died or overran its lease, handed back
    dry_run: bool = False
    skipped: str | None = None  # why nothing was tried (another run holds the SQLite lock)
    failures: list[dict[str, str]] = field(default_factory=list)
    sent_by_key: dict[str, int] = field(default_factory=dict)  # what `status` predicts as due

    def count_sent(self, key: str) -> None:
        """One message of `key` sent (or, in a dry run, that would be)."""
        self.sent += 1
        self.sent_by_key[key] = self.sent_by_key.get(key, 0) + 1

    def summary(self) -> str:
        """One line for people and cron mail."""
        if self.skipped:
            return f"nothing sent: {self.skipped}"
        verb = "would send" if self.dry_run else "sent"
        parts = [f"{verb} {self.sent}", f"failed {self.failed}", f"deferred {self.deferred}"]
        if self.bounced:
            parts.append(f"bounced {self.bounced}")
        if self.waiting:
            parts.append(f"waiting {self.waiting}")
        if self.busy:
            parts.append(f"busy {self.busy}")
        if self.recovered:
            parts.append(f"recovered {self.recovered}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, object]:
        """The --json object."""
        return {
            "sent": self.sent,
            "failed": self.failed,
            "deferred": self.deferred,
            "bounced": self.bounced,
            "waiting": self.waiting,
            "busy": self.busy,
            "recovered": self.recovered,
            "dry_run": self.dry_run,
            "skipped": self.skipped,
            "failures": self.failures,
            "sent_by_key": dict(sorted(self.sent_by_key.items())),
        }

    def fail(self, email: str, key: str, reply: str) -> None:
        """Count a message given up for good."""
        self.failed += 1
        self.failures.append({"email": email, "key": key, "reply": reply})
