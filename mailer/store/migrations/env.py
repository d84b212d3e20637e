"""Alembic environment: migrates the connection handed over by mailer.db, or a URL."""

from alembic import context
from sqlalchemy import Connection, create_engine

import mailer.store.models  # noqa: F401  (registers the ledger tables)
from subscribers.models import Base

config = context.config
connection = config.attributes.get("connection")


def _run(conn: Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:  # `alembic` on the command line, for writing new migrations
    with create_engine(config.get_main_option("sqlalchemy.url") or "").begin() as conn:
        _run(conn)
