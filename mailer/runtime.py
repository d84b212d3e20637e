"""What one command run needs, built once and lazily: settings, database, course, clock."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from mailer.config import Settings, load_settings
from mailer.store import db
from mailer.timing import parse_instant

if TYPE_CHECKING:
    from mailer.content.compose import Composer
    from mailer.content.course import Course
    from mailer.content.dkim import Signer
    from mailer.content.render import Renderer
    from mailer.send.context import SendPolicy
    from mailer.send.pipeline import Lane
    from mailer.send.report import SendReport
    from mailer.transport import Transport
    from mailer.transport.relays import Relay

# Rendering, signing and the transports are imported when first asked for, not at
# start-up: an idle cron run (nothing due) needs the database and nothing else.

NOW_VARIABLE = "REKINDLE_NOW"


class Runtime:
    """The objects a command works with; nothing is read or opened until first asked for."""

    def __init__(
        self, config_path: str | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.config_path = config_path
        self.env = os.environ if env is None else env

    @cached_property
    def settings(self) -> Settings:
        """Validated settings (config file and REKINDLE_* variables)."""
        return load_settings(self.config_path, self.env)

    @cached_property
    def engine(self) -> Engine:
        """The database engine, with the schema created on first use."""
        engine = db.make_engine(self.settings.database_url)
        try:
            db.ensure_schema(engine)
        except BaseException:
            engine.dispose()
            raise
        return engine

    def close(self) -> None:
        """Close the database connections this run opened."""
        engine = self.__dict__.pop("engine", None)
        if engine is not None:
            engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A database session that is closed (and rolled back if unfinished) afterwards."""
        with db.sessions(self.engine)() as session:
            yield session

    @contextmanager
    def pinned_session(self) -> Iterator[Session]:
        """A session that keeps one connection from start to end (mailer.store.db)."""
        with db.pinned_session(self.engine) as session:
            yield session

    @cached_property
    def course(self) -> Course:
        """The course manifest (`course_dir`, or the shipped course)."""
        from mailer.content.course import load_course

        return load_course(self.settings.course_dir)

    @cached_property
    def renderer(self) -> Renderer:
        """The renderer for this run; each lesson is rendered at most once."""
        from mailer.content.render import Renderer

        s = self.settings
        return Renderer(
            self.course,
            postal_address=s.postal_address,
            help_url=s.help_url,
            base_url=s.base_url,
            sender_address=s.sender_email,
            replies=bool(s.reply_to),
        )

    def composer(self, session: Session) -> Composer:
        """A composer signing links with the installation's secret."""
        return self.composer_later(session)()

    def composer_later(self, session: Session) -> Callable[[], Composer]:
        """Reads the installation's secret now; builds the composer when first called.

        A send run with nothing due never calls it, and so never loads the
        templates, Markdown, premailer or the link-signing code. DKIM keys, when
        configured, are loaded now: a key that cannot be used stops the command
        before it claims or sends anything.
        """
        secret = db.installation_secret(session, self.settings.secret_key)
        signer = self.signer()  # a broken DKIM key stops the command before it sends

        def build() -> Composer:
            from mailer.content.compose import Composer
            from mailer.content.message import Sender
            from mailer.tokens import Tokens

            return Composer(
                self.renderer,
                Tokens(secret),
                Sender.from_settings(self.settings),
                self.settings.base_url,
                signer,
            )

        return build

    def signer(self) -> Signer | None:
        """The DKIM signer for `dkim_key_file`'s keys (README, "Getting into the inbox"),
        or None when no key is configured; a ConfigError names a key that cannot be used."""
        if not self.settings.dkim_key_files:
            return None
        from mailer.content import dkimkey
        from mailer.content.dkim import Signer

        return Signer(dkimkey.configured(self.settings))

    def transport(self, relay: Relay | None = None) -> Transport:
        """A transport to `relay` (default: the first in smtp_url), or the Maildir outbox."""
        from mailer.transport import open_transport

        return open_transport(self.settings, relay)

    def send_policy(self) -> SendPolicy:
        """How a send run sends: the send windows, the pace, the claim lease."""
        from mailer.send.context import SendPolicy

        s = self.settings
        return SendPolicy(s.windows, s.rate_limit, timedelta(seconds=s.claim_lease))

    def lanes(self, connections: int | None = None) -> list[Lane]:
        """One lane per relay in `smtp_url` (or the outbox), each with its connections."""
        from mailer.send.pipeline import Lane

        connections = connections or self.settings.smtp_connections
        relays = self.settings.relays
        if not relays:
            return [Lane("outbox", [self.transport() for _ in range(connections)])]
        return [
            Lane(
                relay.name,
                [self.transport(relay) for _ in range(relay.connections or connections)],
                relay.rate,
                relay.daily,
            )
            for relay in relays
        ]

    def send_run(
        self,
        now: datetime,
        *,
        dry_run: bool = False,
        progress: Any = None,
        stop: Callable[[], bool] | None = None,
        connections: int | None = None,
    ) -> SendReport:
        """One send run with this installation's database, relays, course and settings."""
        from mailer.send.run import send_run

        return send_run(
            self.engine,
            self.lanes(1 if dry_run else connections),
            self.composer_later,
            self.send_policy(),
            now,
            dry_run=dry_run,
            progress=progress,
            stop=stop,
        )

    def now(self, override: str | None = None) -> datetime:
        """The clock: --now, else REKINDLE_NOW, else the real time (always UTC)."""
        if override:
            return parse_instant(override, "--now")
        env_now = self.env.get(NOW_VARIABLE)
        if env_now:
            return parse_instant(env_now, NOW_VARIABLE)
        return datetime.now(UTC)

    def warnings(self) -> list[str]:
        """Configuration that works for trying things out but not for real subscribers."""
        s = self.settings
        if not s.smtp_url:
            return []
        missing = [
            key
            for key, unset in (
                ("base_url", s.base_url == "http://localhost:8080"),
                ("postal_address", not s.postal_address),
                ("from", s.sending_domain == "localhost"),
            )
            if unset
        ]
        if not missing:
            return []
        return [f"{', '.join(missing)} not configured: mail to real people needs them"]
