"""`rekindle-mail daemon`: run `send` every few minutes until SIGTERM or SIGINT."""

from __future__ import annotations

import click

from mailer.cli.output import log_to_stderr
from mailer.daemon import SendLoop, install_signal_handlers
from mailer.runtime import Runtime
from mailer.send.context import StopFlag
from mailer.send.report import SendReport

pass_runtime = click.make_pass_decorator(Runtime)


@click.command("daemon")
@click.option(
    "--interval",
    default=300,
    show_default=True,
    type=click.IntRange(min=1),
    help="Seconds between send runs.",
)
@pass_runtime
def daemon(rt: Runtime, interval: int) -> None:
    """Run `send` every INTERVAL seconds until SIGTERM or SIGINT.

    The same delivery as `rekindle-mail send` from cron (use one or the other):
    one log line per run that did something; when the mail server is down it
    logs, backs off and keeps going; on SIGTERM it finishes the message in
    flight, closes the SMTP connection and exits 0. REKINDLE_NOW, if set,
    applies to every run.

    Example:

    \b
        rekindle-mail daemon --interval 60
    """
    log_to_stderr("%(asctime)s %(message)s")
    rt.settings  # noqa: B018  (configuration errors stop the daemon before it starts)
    rt.engine  # noqa: B018

    def tick(stop: StopFlag) -> SendReport:
        return rt.send_run(rt.now(), stop=stop)

    loop = SendLoop(tick, interval)
    install_signal_handlers(loop)
    click.echo(f"rekindle-mail daemon: sending every {interval}s; SIGTERM stops", err=True)
    loop.run()
