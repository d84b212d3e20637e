"""The `rekindle-mail` command: parses arguments, calls one service function, prints."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from mailer import __version__
from mailer.cli import (
    broadcast,
    course,
    daemon,
    db,
    delivery,
    inbound,
    progress,
    subscribers,
    web,
)
from mailer.errors import RekindleError
from mailer.runtime import Runtime


class CommandError(click.ClickException):
    """A one-line error with the exit code SPEC §8 gives it."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # per instance, by design


class RekindleGroup(click.Group):
    """Turns every error into one clear line on stderr (the traceback only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise
        except RekindleError as exc:
            if _debug(ctx):
                raise
            raise CommandError(str(exc), exc.exit_code) from None
        except SQLAlchemyError as exc:
            if _debug(ctx):
                raise
            reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
            raise CommandError(f"database error: {reason}") from None
        except OSError as exc:
            if _debug(ctx):
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            raise CommandError(f"{exc.strerror or exc}{where}") from None
        except Exception as exc:
            if _debug(ctx):
                raise
            raise CommandError(
                f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)"
            ) from None


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.meta.get("rekindle.debug"))


@click.group(cls=RekindleGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Config file (default: $REKINDLE_CONFIG, else ./rekindle.toml).",
)
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
@click.version_option(__version__, prog_name="rekindle-mail")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, debug: bool) -> None:
    """Run the Rekindle six-week email course: subscribers, lessons, delivery.

    Configuration comes from rekindle.toml (or --config), and every key can be
    overridden by an environment variable REKINDLE_<KEY>, e.g. REKINDLE_SMTP_URL.

    Example:

    \b
        rekindle-mail subscribers add ada@example.org --name Ada --timezone Europe/London
        rekindle-mail send
    """
    ctx.meta["rekindle.debug"] = debug or os.environ.get("REKINDLE_DEBUG") == "1"
    ctx.obj = Runtime(config_path)
    ctx.call_on_close(ctx.obj.close)


for module in (subscribers, progress, course, delivery, daemon, broadcast, db, web, inbound):
    for command in module.COMMANDS:
        cli.add_command(command)


def main() -> None:
    """Console-script entry point (click exits quietly when a reader closes the pipe)."""
    sys.exit(cli.main(prog_name="rekindle-mail"))
