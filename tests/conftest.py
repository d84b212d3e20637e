"""Fixtures with real parts: SQLite files, PostgreSQL schemas, an aiosmtpd server, the CLI."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from mailer.store.db import normalize_url
from mailserver import MailServer

PG_URL = os.environ.get("REKINDLE_TEST_DATABASE_URL")
NO_PG = "REKINDLE_TEST_DATABASE_URL is not set: no PostgreSQL server to test against"


@pytest.fixture
def smtp_server() -> Iterator[MailServer]:
    """A real SMTP server on loopback that keeps every message."""
    server = MailServer().start()
    yield server
    server.stop()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'rekindle.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema on the PostgreSQL server, dropped afterwards."""
    if not PG_URL:
        pytest.skip(NO_PG)
    schema = f"rk_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(PG_URL))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(normalize_url(PG_URL)).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs on SQLite and on PostgreSQL (when available)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rekindle.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def env(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for CLI runs: a private HOME, SQLite file and outbox, no stray REKINDLE_*."""
    monkeypatch.chdir(tmp_path)
    base = {k: v for k, v in os.environ.items() if not k.startswith("REKINDLE_")}
    home = tmp_path / "home"
    home.mkdir()
    base.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        REKINDLE_DATABASE_URL=sqlite_url,
        REKINDLE_OUTBOX=str(tmp_path / "outbox"),
        REKINDLE_FROM="Rekindle <hello@example.org>",
        REKINDLE_BASE_URL="https://rekindle.example.org",
        REKINDLE_POSTAL_ADDRESS="Rekindle, 1 Example Street, Springfield",
    )
    return base
