"""Database engine, schema creation and Alembic migrations, and installation secrets."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from mailer.config import mask_url
from mailer.errors import DatabaseError
from mailer.files import close_to_others, create_private, private_dir
from mailer.store.migrations import HEAD
from mailer.store.models import Meta

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported only when a migration runs: it costs a third of a second
# of start-up, which every cron run would pay.

SQLITE_BUSY_MS = 30_000
_MIGRATION_LOCK = 7_135_042  # pg_advisory_xact_lock key: one migrator at a time


def dialect_insert(dialect: str) -> Any:
    """The INSERT construct with ON CONFLICT clauses for `dialect` ("postgresql" or "sqlite").

    The PostgreSQL dialect module is imported only when asked for: it pulls in
    asyncio, a cost an idle SQLite run should not pay.
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


def normalize_url(url: str) -> str:
    """Accept postgres:// and postgresql:// and use the psycopg 3 driver for them."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, foreign keys, FULL sync and a busy timeout."""
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"database_url {mask_url(url)!r} is not a database URL") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseError(
            f"database_url {mask_url(url)!r}: {backend!r} is not supported; "
            "use sqlite:///path/to/file.db or postgresql://user@host/database"
        )
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and "uri" not in parsed.query:
            _private_sqlite_file(Path(parsed.database).expanduser())
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    try:
        return create_engine(parsed, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise DatabaseError(
            f"no driver for {parsed.get_backend_name()} ({exc.name} is not installed); "
            "for PostgreSQL install rekindle-mail[postgres]"
        ) from None


def _private_sqlite_file(path: Path) -> None:
    """Create the database file 0600 (in 0700 folders) before SQLite opens it.

    SQLite gives its -wal and -shm files the database file's mode, and the run
    lock is made 0600 too; an existing file loses every other user's access
    (it holds the secret key). See the README's "Files it creates".
    """
    try:
        private_dir(path.parent)
        if not create_private(path):
            companions = ("-wal", "-shm", "-journal", "-sendlock")
            close_to_others(path, *(path.with_name(path.name + end) for end in companions))
    except OSError as exc:
        where = exc.filename or path
        raise DatabaseError(f"cannot create {where}: {exc.strerror or exc}") from None


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cur.close()


def sessions(engine: Engine | Connection) -> sessionmaker[Session]:
    """A session factory whose objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def pinned_session(engine: Engine) -> Iterator[Session]:
    """A session that keeps one connection from start to end.

    A plain session hands its connection back to the pool at every commit and
    checks one out (and, on PostgreSQL, pings it: a round trip) at the next
    statement. A send run commits hundreds of times a second, so it keeps its own.
    """
    with engine.connect() as connection, sessions(connection)() as session:
        yield session


def _alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "mailer.store:migrations")
    return cfg


def head_revision() -> str:
    """The newest migration this version of rekindle-mail ships."""
    return HEAD


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None for an empty database)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.scalar(text("SELECT version_num FROM alembic_version"))


def ensure_schema(engine: Engine) -> None:
    """Create the schema in an empty database; refuse one at an older revision."""
    try:
        current = current_revision(engine)
        head = head_revision()
        if current == head:
            return
        if current is None:
            if inspect(engine).has_table("subscribers"):
                raise DatabaseError("the database has rekindle tables but no migration record")
            upgrade(engine)
            return
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot open the database: {_reason(exc)}") from None
    raise DatabaseError(
        f"the database schema is at revision {current}, this version needs {head}: "
        "run `rekindle-mail db upgrade`"
    )


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Apply all pending migrations; return (revision before, revision after)."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    cfg = _alembic_config()
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            before = MigrationContext.configure(conn).get_current_revision()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except SQLAlchemyError as exc:
        # Another process may have created the schema at the same moment.
        if current_revision(engine) == head_revision():
            return None, head_revision()
        raise DatabaseError(f"database migration failed: {_reason(exc)}") from None
    return before, head_revision()


def _reason(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    return " ".join(str(orig or exc).split())[:300]


def installation_secret(session: Session, configured: str | None) -> str:
    """The configured secret key, or one generated once and kept in the database."""
    if configured:
        return configured
    stored = session.scalar(select(Meta.value).where(Meta.key == "secret_key"))
    if stored:
        return stored
    try:
        with session.begin_nested():
            session.add(Meta(key="secret_key", value=secrets.token_urlsafe(32)))
        session.commit()
    except IntegrityError:
        session.rollback()
    value = session.scalar(select(Meta.value).where(Meta.key == "secret_key"))
    assert value is not None
    return value
