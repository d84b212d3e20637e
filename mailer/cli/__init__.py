"""The `rekindle-mail` command: parses arguments, calls one service function, prints."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

import click

from mailer import __version__
from mailer.errors import RekindleError
from mailer.runtime import Runtime
from mailer.settings_view import redact, secret_values

# Each command's module is imported only when that command runs (or --help lists
# them all): a cron `send` with nothing due should not pay for rendering, the web
# face or IMAP. Name -> "module:attribute".
COMMANDS = {
    "broadcast": "mailer.cli.broadcast:group",
    "config": "mailer.cli.config:group",
    "course": "mailer.cli.course:group",
    "daemon": "mailer.cli.daemon:daemon",
    "db": "mailer.cli.db:group",
    "deliveries": "mailer.cli.delivery:deliveries",
    "dkim": "mailer.cli.dkim:group",
    "doctor": "mailer.cli.doctor:doctor",
    "inbound": "mailer.cli.inbound:inbound_",
    "preview": "mailer.cli.course:preview",
    "send": "mailer.cli.delivery:send",
    "serve": "mailer.cli.web:serve",
    "status": "mailer.cli.delivery:status",
    "subscribers": "mailer.cli.subscribers:group",
    "test-send": "mailer.cli.course:test_send",
}


class CommandError(click.ClickException):
    """A one-line error with the exit code docs/commands.md gives it."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # per instance, by design


class RekindleGroup(click.Group):
    """Turns every error into one clear line on stderr (the traceback only with --debug).

    Neither the line nor the traceback ever shows a password or key: every secret
    the run knows is replaced by ***. Commands are loaded from COMMANDS on first use.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in COMMANDS:
            module, _, attribute = COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise
        except Exception as exc:
            secrets = _secrets(ctx)
            if ctx.meta.get("rekindle.debug"):
                click.echo(redact(traceback.format_exc(), secrets).rstrip(), err=True)
                raise click.exceptions.Exit(getattr(exc, "exit_code", 1)) from None
            message, code = _one_line(exc)
            raise CommandError(redact(message, secrets), code) from None


def _one_line(exc: Exception) -> tuple[str, int]:
    """The error line and exit code for `exc`."""
    if isinstance(exc, RekindleError):
        return str(exc), exc.exit_code
    from sqlalchemy.exc import SQLAlchemyError  # loaded by then if the database was used

    if isinstance(exc, SQLAlchemyError):
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        return f"database error: {reason}", 1
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}", 1
    return f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)", 1


def _secrets(ctx: click.Context) -> set[str]:
    """Every secret the run knows: settings, environment, and any a command adds to
    ctx.meta["rekindle.secrets"] (a password given on its command line)."""
    extra = {s for s in ctx.meta.get("rekindle.secrets", ()) if len(s) >= 4}
    runtime = ctx.obj if isinstance(ctx.obj, Runtime) else None
    if runtime is None:
        return secret_values(None, os.environ) | extra
    settings = runtime.__dict__.get("settings")  # only if it loaded
    return secret_values(settings, runtime.env) | extra


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


def main() -> None:
    """Console-script entry point (click exits quietly when a reader closes the pipe)."""
    sys.exit(cli.main(prog_name="rekindle-mail"))
