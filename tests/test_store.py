"""The schema: Alembic migrations match the models, upgrade in place, and guard old databases."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

import mailer.store.models  # noqa: F401  (registers the ledger tables)
from clirun import run
from mailer.store import db
from mailer.store.migrations import HEAD
from subscribers.models import Base


def test_head_constant_names_the_newest_migration():
    """mailer.migrations.HEAD (read on every run instead of importing Alembic) is the real head."""
    script = ScriptDirectory.from_config(db._alembic_config())
    assert script.get_current_head() == HEAD
    assert len(script.get_heads()) == 1


# SQLite reflection cannot read the lower(email) index back; the other backend checks it.
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
def test_migrated_schema_matches_the_models(database_url):
    """A database built by the migrations has the tables, columns and indexes of the models."""
    engine = db.make_engine(database_url)
    db.ensure_schema(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


def test_an_older_database_is_refused_until_upgraded(database_url, env):
    """An older schema gets a one-line 'run db upgrade' error; upgrading fixes it."""
    engine = db.make_engine(database_url)
    cfg = db._alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    engine.dispose()
    env["REKINDLE_DATABASE_URL"] = database_url

    refused = run(env, "subscribers", "list")
    assert refused.exit_code == 1
    assert "run `rekindle-mail db upgrade`" in refused.stderr
    assert "0001" in refused.stderr

    upgraded = run(env, "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert f"from 0001 to revision {HEAD}" in upgraded.stdout
    assert run(env, "subscribers", "list", "--json").stdout.strip() == "[]"


def test_tables_without_a_migration_record_are_not_touched(sqlite_url, env):
    """A database that has rekindle tables but no Alembic record is refused, not overwritten."""
    engine = db.make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE subscribers (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    result = run(env, "subscribers", "list")
    assert result.exit_code == 1
    assert "no migration record" in result.stderr
