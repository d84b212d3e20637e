"""Reading unseen messages from an IMAP mailbox (imaps://, or imap:// on loopback)."""

from __future__ import annotations

import imaplib
import ssl
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import unquote, urlsplit

from mailer.errors import ConfigError, TransportUnavailable, describe
from mailer.transport.smtp import is_loopback

DEFAULT_PORTS = {"imaps": 993, "imap": 143}
TIMEOUT = 60.0


class ImapMailbox:
    """One IMAP mailbox named by a URL like imaps://user@host/INBOX."""

    def __init__(self, url: str, *, password: str | None, ca_file: Path | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname or not parts.username:
            raise ConfigError("--imap must look like imaps://user@host/INBOX")
        self.scheme = parts.scheme
        self.host = parts.hostname
        try:
            self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise ConfigError("--imap has an invalid port") from None
        self.user = unquote(parts.username)
        self._password = password or (unquote(parts.password) if parts.password else None)
        if self._password is None:
            raise ConfigError("the IMAP password is missing: set REKINDLE_IMAP_PASSWORD")
        if self.scheme == "imap" and not is_loopback(self.host):
            raise ConfigError(
                f"refusing to send the IMAP password unencrypted to {self.host}: use imaps://"
            )
        self.folder = unquote(parts.path.lstrip("/")) or "INBOX"
        self._ca_file = ca_file
        self._imap: imaplib.IMAP4 | None = None
        self.description = f"the IMAP mailbox {self.folder} at {self.host}:{self.port}"

    def __enter__(self) -> Self:
        try:
            if self.scheme == "imaps":
                context = ssl.create_default_context(
                    cafile=str(self._ca_file) if self._ca_file else None
                )
                imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    self.host, self.port, ssl_context=context, timeout=TIMEOUT
                )
            else:
                imap = imaplib.IMAP4(self.host, self.port, timeout=TIMEOUT)
            self._imap = imap
            imap.login(self.user, self._password or "")
            status, _ = imap.select(_quote(self.folder))
            if status != "OK":
                raise TransportUnavailable(f"{self.description} cannot be opened")
        except TransportUnavailable:
            self._close()
            raise
        except ssl.SSLCertVerificationError as exc:
            self._close()
            raise TransportUnavailable(
                f"{self.description} presented a certificate that cannot be trusted "
                f"({exc.verify_message}); set tls_ca_file if it uses a private CA"
            ) from None
        except (TimeoutError, imaplib.IMAP4.error, OSError) as exc:
            self._close()
            raise TransportUnavailable(f"cannot read {self.description}: {describe(exc)}") from None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    def unseen(self, max_bytes: int | None = None) -> Iterator[tuple[str, bytes | None]]:
        """(uid, raw message) for each unseen message, oldest first, without marking it seen.

        A message larger than `max_bytes` comes as (uid, None): the caller sets it aside.
        """
        imap = self._require()
        try:
            status, data = imap.uid("SEARCH", "UNSEEN")
            if status != "OK":
                raise TransportUnavailable(f"{self.description} refused to search")
            for uid in (data[0] or b"").decode("ascii").split():
                status, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
                raw = next((p[1] for p in parts if isinstance(p, tuple)), None)
                if status == "OK" and raw is not None:
                    too_big = max_bytes is not None and len(raw) > max_bytes
                    yield uid, None if too_big else bytes(raw)
        except (imaplib.IMAP4.error, OSError) as exc:
            raise TransportUnavailable(f"cannot read {self.description}: {describe(exc)}") from None

    def mark_seen(self, uid: str) -> None:
        """Flag one message as handled."""
        try:
            self._require().uid("STORE", uid, "+FLAGS", "(\\Seen)")
        except (imaplib.IMAP4.error, OSError) as exc:
            raise TransportUnavailable(
                f"cannot update {self.description}: {describe(exc)}"
            ) from None

    def set_aside(self, uid: str, folder: str | None) -> None:
        """Take a message that cannot be handled out of the way, so no later poll trips on it.

        With `folder` (imap_quarantine) it is moved there (RFC 6851 MOVE, else
        COPY and flagged \\Deleted for the next expunge), the folder created if
        need be; otherwise, or if that fails, it is only marked seen.
        """
        if folder and self._move(uid, folder):
            return
        self.mark_seen(uid)

    def _move(self, uid: str, folder: str) -> bool:
        imap = self._require()
        target = _quote(folder)
        try:
            for attempt in range(2):
                if "MOVE" in imap.capabilities:
                    status, _ = imap.uid("MOVE", uid, target)
                else:
                    status, _ = imap.uid("COPY", uid, target)
                    if status == "OK":
                        imap.uid("STORE", uid, "+FLAGS", "(\\Seen \\Deleted)")
                if status == "OK":
                    return True
                if attempt == 0:
                    imap.create(target)  # it may not exist yet: create it and try once more
        except (imaplib.IMAP4.error, OSError) as exc:
            raise TransportUnavailable(
                f"cannot update {self.description}: {describe(exc)}"
            ) from None
        return False

    def _require(self) -> imaplib.IMAP4:
        if self._imap is None:
            raise RuntimeError("ImapMailbox used outside its with-block")
        return self._imap

    def _close(self) -> None:
        imap, self._imap = self._imap, None
        if imap is None:
            return
        try:
            if imap.state == "SELECTED":
                imap.close()
            imap.logout()
        except (imaplib.IMAP4.error, OSError):
            imap.shutdown()


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
