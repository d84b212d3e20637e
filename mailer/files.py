"""Files and folders rekindle creates hold secrets and personal data: only their owner may use them.

New files are 0600 and new folders 0700 whatever the umask (see the README's
"Files it creates"). A file that already exists keeps its owner's choice,
except that a database nobody else should read loses every other user's access.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import TextIO

FILE_MODE = 0o600
DIR_MODE = 0o700
_WRITE_NEW = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC

log = logging.getLogger("rekindle.files")


def private_dir(path: Path) -> Path:
    """`path` as a folder, creating it and any missing parents with mode 0700.

    Folders that exist already are left as they are (a shared /srv, a volume).
    """
    missing = []
    folder = Path(path)
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue  # another process made it meanwhile
        os.chmod(folder, DIR_MODE)  # the umask may have taken bits away from 0700 itself
    return Path(path)


def private_file(path: Path | str, *, encoding: str = "utf-8", newline: str = "") -> TextIO:
    """`path` opened for writing as text (created, or emptied), readable by its owner only.

    The mode is set on the open file before anything is written, so not even a
    moment's worth of content is readable by others. A file that belongs to
    another user keeps their mode (it is theirs to choose).
    """
    fd = os.open(path, _WRITE_NEW | os.O_TRUNC, FILE_MODE)
    try:
        _own(fd)
        return os.fdopen(fd, "w", encoding=encoding, newline=newline)
    except BaseException:
        os.close(fd)
        raise


def create_private(path: Path) -> bool:
    """Create `path` as an empty 0600 file unless something is there; True if it was created."""
    try:
        fd = os.open(path, _WRITE_NEW | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    try:
        _own(fd)
    finally:
        os.close(fd)
    return True


def write_new_private(path: Path, data: bytes) -> None:
    """Write `data` to a new 0600 file `path`; FileExistsError if anything is there."""
    fd = os.open(path, _WRITE_NEW | os.O_EXCL, FILE_MODE)
    try:
        _own(fd)
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(data)
    finally:
        os.close(fd)


def close_to_others(*paths: Path) -> None:
    """Take every other user's access away from those of `paths` that exist, saying so.

    For a database made before rekindle created it private (or copied with a
    loose umask): it holds the secret key that signs every link.
    """
    for path in paths:
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if not mode & 0o007:
            continue
        try:
            os.chmod(path, mode & ~0o007)
        except OSError as exc:
            log.warning(
                "Warning: %s can be used by every user on this machine (mode %o) and "
                "cannot be changed (%s): chmod o-rwx it",
                path,
                mode,
                exc.strerror or exc,
            )
            continue
        log.warning(
            "Warning: %s could be used by every user on this machine (mode %o); "
            "it is now %o (other users: no access)",
            path,
            mode,
            mode & ~0o007,
        )


def _own(fd: int) -> None:
    """Mode 0600 for the open file `fd` if it is a regular file of this user's."""
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid():
        os.fchmod(fd, FILE_MODE)
