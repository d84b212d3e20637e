"""The embedded default transport: every message becomes a file in a Maildir folder."""

from __future__ import annotations

import mailbox
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from mailer.errors import TransportUnavailable

if TYPE_CHECKING:
    from mailer.message import Outgoing


class MaildirTransport:
    """Writes each message into `path` (Maildir: tmp/, new/, cur/), readable by mail clients."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.description = f"the outbox {self.path}"
        self._box: mailbox.Maildir | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._box = None

    def send(self, message: Outgoing, gate: Callable[[], None] | None = None) -> None:
        """Store the message in new/ (atomically: written in tmp/, then renamed).

        `gate`, if given, is called before the message becomes visible.
        """
        if gate is not None:
            gate()
        try:
            if self._box is None:
                # An existing empty folder (a fresh volume, an operator's mkdir) is fine too.
                for sub in ("tmp", "new", "cur"):
                    (self.path / sub).mkdir(parents=True, exist_ok=True)
                self._box = mailbox.Maildir(self.path, create=False)
            envelope = f"Return-Path: <{message.sender}>\nDelivered-To: {message.recipient}\n"
            self._box.add(envelope.encode() + message.data.replace(b"\r\n", b"\n"))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise TransportUnavailable(f"cannot write to {self.description}: {reason}") from None
