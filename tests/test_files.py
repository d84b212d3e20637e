"""Files rekindle creates are private whatever the umask: 0600 files in 0700 folders.

Every command here is the installed console script in a subprocess started with
the umask given, as cron or a careless shell would start it.
"""

from __future__ import annotations

import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from clirun import SCRIPT

NOW = "2026-03-02T09:30:00+00:00"  # a Monday inside the default send window
ADDED = "2026-03-02T08:00:00+00:00"
UMASKS = {"umask-022": 0o022, "umask-000": 0o000}


def cli(env: dict[str, str], umask: int, *args: str) -> subprocess.CompletedProcess[str]:
    """The console script run with `umask`, which must succeed."""
    assert SCRIPT is not None
    done = subprocess.run(
        [SCRIPT, *args],
        env=env,
        umask=umask,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_under(root: Path) -> dict[str, int]:
    """Every file and folder below `root` (itself included) and its mode."""
    found = {".": mode(root)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = mode(path)
    return found


@pytest.fixture
def default_env(env: dict[str, str]) -> dict[str, str]:
    """No database_url or outbox: both go to the user data directory, which does not exist."""
    return {k: v for k, v in env.items() if k not in ("REKINDLE_DATABASE_URL", "REKINDLE_OUTBOX")}


@pytest.mark.parametrize("umask", list(UMASKS.values()), ids=list(UMASKS))
def test_the_data_directory_database_and_outbox_are_private_whatever_the_umask(default_env, umask):
    """A first run creates the data directory (and missing parents) 0700, the SQLite database,
    its companions and the run lock 0600, the outbox's folders 0700 and each message 0600."""
    share = Path(default_env["XDG_DATA_HOME"])
    assert not share.exists()
    cli({**default_env, "REKINDLE_NOW": ADDED}, umask, "subscribers", "add", "ada@example.org")
    reader = sqlite3.connect(share / "rekindle-mail" / "rekindle.db")  # keeps -wal and -shm
    try:
        reader.execute("SELECT count(*) FROM subscribers").fetchone()
        cli(default_env, umask, "send", "--now", NOW)
        cli(default_env, umask, "test-send", "ada@example.org", "2")
        data = share / "rekindle-mail"
        found = modes_under(data)
    finally:
        reader.close()
    messages = [name for name in found if name.startswith("outbox/new/")]
    assert len(messages) == 2, found
    for name in ("rekindle.db", "rekindle.db-wal", "rekindle.db-shm", "rekindle.db-sendlock"):
        assert name in found, found
    files = {name: m for name, m in found.items() if (data / name).is_file()}
    folders = {name: m for name, m in found.items() if (data / name).is_dir()}
    assert set(folders) == {".", "outbox", "outbox/tmp", "outbox/new", "outbox/cur"}
    assert {name: oct(m) for name, m in files.items() if m != 0o600} == {}
    assert {name: oct(m) for name, m in folders.items() if m != 0o700} == {}
    for parent in (share, share.parent):  # ~/.local/share and ~/.local: made by this run
        assert mode(parent) == 0o700, parent


@pytest.mark.parametrize("umask", list(UMASKS.values()), ids=list(UMASKS))
def test_an_export_to_a_file_is_private_even_over_an_open_file(env, tmp_path, umask):
    """`subscribers export FILE` writes 0600, and tightens a file that was readable by all."""
    cli({**env, "REKINDLE_NOW": ADDED}, umask, "subscribers", "add", "ada@example.org")
    fresh = tmp_path / "fresh.csv"
    cli(env, umask, "subscribers", "export", str(fresh))
    assert mode(fresh) == 0o600
    assert "ada@example.org" in fresh.read_text(encoding="utf-8")

    loose = tmp_path / "loose.csv"
    loose.write_text("old contents\n", encoding="utf-8")
    loose.chmod(0o666)
    cli(env, umask, "subscribers", "export", str(loose))
    assert mode(loose) == 0o600
    assert "old contents" not in loose.read_text(encoding="utf-8")


def test_an_outbox_folder_the_operator_made_keeps_its_mode_and_its_contents_are_private(env):
    """An existing outbox folder (an operator's mkdir, a volume) is left as it is; the Maildir
    folders rekindle adds inside are 0700 and the messages 0600, even under umask 000."""
    outbox = Path(env["REKINDLE_OUTBOX"])
    outbox.mkdir()
    outbox.chmod(0o755)
    cli({**env, "REKINDLE_NOW": ADDED}, 0, "subscribers", "add", "ada@example.org")
    cli(env, 0, "send", "--now", NOW)
    found = modes_under(outbox)
    assert found.pop(".") == 0o755
    assert {found.pop(sub) for sub in ("tmp", "new", "cur")} == {0o700}
    assert len(found) == 1 and set(found.values()) == {0o600}, found


def test_a_database_every_user_could_read_is_closed_to_them_with_a_warning(env, tmp_path):
    """A database left world-readable (made by an older version, or copied) loses other users'
    access at the next command, with one warning line; the owner's and group's stay."""
    database = tmp_path / "rekindle.db"
    cli({**env, "REKINDLE_NOW": ADDED}, 0o022, "subscribers", "add", "ada@example.org")
    database.chmod(0o664)
    lock = tmp_path / "rekindle.db-sendlock"
    lock.touch()
    lock.chmod(0o666)

    done = cli(env, 0o022, "status")
    warnings = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(warnings) == 2, done.stderr
    assert str(database) in warnings[0] and "every user" in warnings[0]
    assert "Traceback" not in done.stderr
    assert (mode(database), mode(lock)) == (0o660, 0o660)
    again = cli(env, 0o022, "status")
    assert again.stderr == ""
