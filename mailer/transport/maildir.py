"""The embedded default transport: every message becomes a file in a Maildir folder."""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from mailer.errors import TransportUnavailable
from mailer.files import DIR_MODE, FILE_MODE, private_dir

if TYPE_CHECKING:
    from mailer.content.message import Outgoing

_COUNTER = itertools.count(1)  # unique names for messages stored in the same microsecond


class MaildirTransport:
    """Writes each message into `path` (Maildir: tmp/, new/, cur/), readable by mail clients.

    Lessons are personal: the folders rekindle creates are 0700 and every
    message is 0600, whatever the umask (README, "Files it creates").
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.description = f"the outbox {self.path}"
        self._ready = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._ready = False

    def send(self, message: Outgoing, gate: Callable[[], None] | None = None) -> None:
        """Store the message in new/ (atomically: written in tmp/, then renamed).

        `gate`, if given, is called before the message becomes visible.
        """
        if gate is not None:
            gate()
        envelope = f"Return-Path: <{message.sender}>\nDelivered-To: {message.recipient}\n"
        data = envelope.encode() + message.data.replace(b"\r\n", b"\n")
        try:
            if not self._ready:
                self._make_folders()
            name = _unique_name()
            tmp = self.path / "tmp" / name
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fd, FILE_MODE)  # a umask cannot add bits, but it may take the owner's
                fh.write(data)
            os.rename(tmp, self.path / "new" / name)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise TransportUnavailable(f"cannot write to {self.description}: {reason}") from None

    def _make_folders(self) -> None:
        """The Maildir's folders: new ones 0700; an existing empty folder (a fresh volume,
        an operator's mkdir) is fine too, and keeps its mode."""
        private_dir(self.path)
        for sub in ("tmp", "new", "cur"):
            folder = self.path / sub
            if not folder.is_dir():
                try:
                    folder.mkdir(mode=DIR_MODE)
                    os.chmod(folder, DIR_MODE)
                except FileExistsError:
                    if not folder.is_dir():
                        raise
        self._ready = True


def _unique_name() -> str:
    """A Maildir file name: time, microseconds, process, counter and host (as `mailbox` makes)."""
    now = time.time()
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
    return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_COUNTER)}.{host}"
