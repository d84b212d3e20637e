"""Running the CLI as users do: in-process through click's runner, or the installed script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailer.cli import cli

SCRIPT = shutil.which("rekindle-mail", path=str(Path(sys.executable).parent)) or shutil.which(
    "rekindle-mail"
)


def _isolated(env: dict[str, str]) -> dict[str, str | None]:
    """CliRunner keeps os.environ; unset every REKINDLE_* that `env` does not name."""
    cleared: dict[str, str | None] = {k: None for k in os.environ if k.startswith("REKINDLE_")}
    cleared.update(env)
    return cleared


def run(env: dict[str, str], *args: str, input: str | bytes | None = None) -> Result:
    """Run the CLI in-process through click's runner."""
    return CliRunner().invoke(cli, list(args), env=_isolated(env), input=input)


def script(
    env: dict[str, str], *args: str, cwd: Path | None = None, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script in a subprocess, as a user or cron would.

    `input` (raw bytes, as an MTA pipes a message) is written to its stdin.
    """
    if SCRIPT is None:
        pytest.fail("the rekindle-mail console script is not installed (pip install .)")
    if input is None:
        return subprocess.run(
            [SCRIPT, *args],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    done = subprocess.run(
        [SCRIPT, *args],
        env=env,
        cwd=cwd,
        input=input,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )


def listed(env: dict[str, str], *args: str) -> dict[str, dict]:
    """`subscribers list --json` keyed by email."""
    result = run(env, "subscribers", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    return {row["email"]: row for row in json.loads(result.stdout)}


def add(env: dict[str, str], email: str, *args: str, now: str) -> None:
    """`subscribers add EMAIL ARGS...` at the instant `now`, which must succeed."""
    result = run({**env, "REKINDLE_NOW": now}, "subscribers", "add", email, *args)
    assert result.exit_code == 0, result.output


def instant(when: datetime | str) -> str:
    """An instant as `--now` takes it (ISO-8601 with offset)."""
    return when if isinstance(when, str) else when.isoformat()


def send(env: dict[str, str], when: datetime | str, *extra: str) -> dict:
    """One `send --now WHEN --json` run, which must succeed; its report."""
    result = run(env, "send", "--now", instant(when), "--json", *extra)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def status(env: dict[str, str], when: datetime | str) -> dict:
    """`status --now WHEN --json`, which must succeed."""
    result = run(env, "status", "--now", instant(when), "--json")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def add_all(env: dict[str, str], *emails: str) -> None:
    """`subscribers add` for each address (at REKINDLE_NOW, if `env` sets it), each must succeed."""
    for address in emails:
        result = run(env, "subscribers", "add", address)
        assert result.exit_code == 0, result.output
