"""`rekindle-mail db upgrade`: apply the Alembic migrations shipped with this version."""

from __future__ import annotations

import click

from mailer.runtime import Runtime
from mailer.store import db

pass_runtime = click.make_pass_decorator(Runtime)


@click.group("db")
def group() -> None:
    """Database maintenance.

    Example:

    \b
        rekindle-mail db upgrade
    """


@group.command("upgrade")
@pass_runtime
def upgrade(rt: Runtime) -> None:
    """Apply pending migrations (a fresh database is also created on first use).

    Example:

    \b
        REKINDLE_DATABASE_URL=postgresql://mail@db/rekindle rekindle-mail db upgrade
    """
    engine = db.make_engine(rt.settings.database_url)
    try:
        before, after = db.upgrade(engine)
    finally:
        engine.dispose()
    if before == after:
        click.echo(f"database already at revision {after}")
    else:
        click.echo(f"database upgraded from {before or 'empty'} to revision {after}")
