"""Who is sending now: one `send` run at a time on SQLite, any number on PostgreSQL.

A run holds a lock for as long as it lives, and the operating system or the
database server drops it the instant the process dies (kill -9 included):

- SQLite: an exclusive `flock` on a file beside the database. Whoever holds it
  knows that no other run is alive, so claims left by any other run are orphans.
- PostgreSQL: a session-level advisory lock on a random 62-bit key, held on a
  connection of its own. The keys in `pg_locks` are the runs that are alive, on
  any machine; claims made by any other key are orphans.

Claims record their owner (`deliveries.claimed_by`), so a new run can hand a
dead run's claims back at once instead of waiting for their lease to end.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

_LIVE_PG_RUNS = text(
    "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks"
    " WHERE locktype = 'advisory' AND objsubid = 1 AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


class RunLock:
    """The lock one `send` run holds while it lives; `owner` names its claims.

    `exclusive` is true when no other send run can be alive meanwhile, so no
    other run can take this run's claims, however long it is held up.
    """

    exclusive = False

    def __init__(self, owner: str) -> None:
        self.owner = owner

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def release(self) -> None:
        """Let the next run in."""

    def alive(self, session: Session) -> set[str] | None:
        """The owners whose runs are alive now, or None when every other one is dead."""
        return None


class FileRunLock(RunLock):
    """SQLite: an exclusive flock; holding it proves every other run has ended."""

    exclusive = True

    def __init__(self, owner: str, fd: int) -> None:
        super().__init__(owner)
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing drops the flock

    def alive(self, session: Session) -> set[str] | None:
        return {self.owner}


class AdvisoryRunLock(RunLock):
    """PostgreSQL: a session advisory lock, visible to every other run in pg_locks."""

    def __init__(self, owner: str, connection: Connection) -> None:
        super().__init__(owner)
        self._connection: Connection | None = connection

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": int(self.owner)})
                connection.commit()
            with contextlib.suppress(Exception):
                connection.close()

    def alive(self, session: Session) -> set[str] | None:
        return {str(key) for key in session.scalars(_LIVE_PG_RUNS)}


class RunBusy(Exception):
    """Another run holds the lock (SQLite); `holder` says who, when known."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def acquire(engine: Engine, wait: float) -> RunLock:
    """Take this run's lock, waiting up to `wait` seconds on SQLite; RunBusy if still taken."""
    if engine.dialect.name == "postgresql":
        key = secrets.randbits(62) + 1
        connection = engine.connect()
        try:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            connection.commit()
        except BaseException:
            connection.close()
            raise
        return AdvisoryRunLock(str(key), connection)
    owner = f"{socket.gethostname()[:20]}:{os.getpid()}:{secrets.token_hex(4)}"
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return RunLock(owner)
    path = Path(database).expanduser().with_name(Path(database).name + "-sendlock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = _read(fd)
                os.close(fd)
                raise RunBusy(holder) from None
            time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return FileRunLock(owner, fd)


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""
