"""`rekindle-mail subscribers restart|jump|reminders`: move someone through the course by hand."""

from __future__ import annotations

import click

from mailer.app import history, pace, progress
from mailer.cli.subscribers import group
from mailer.reports import summary as reports
from mailer.runtime import Runtime

pass_runtime = click.make_pass_decorator(Runtime)


@group.command("restart")
@click.argument("email")
@pass_runtime
def restart(rt: Runtime, email: str) -> None:
    """Start the course again from lesson 1 (earlier deliveries stay in the history).

    Lesson 1 goes out at the next send window, and never sooner than a week
    after the last lesson they received.

    Example:

    \b
        rekindle-mail subscribers restart ada@example.org
    """
    with rt.session() as session:
        sub = progress.restart(session, email, rt.now(), rt.settings.windows)
        due = reports.iso(sub.next_due_at, sub.timezone)
        click.echo(f"restarted {sub.email}; lesson 1 is due {due}")


@group.command("jump")
@click.argument("email")
@click.argument("week", type=int)
@pass_runtime
def jump(rt: Runtime, email: str, week: int) -> None:
    """Make lesson WEEK the subscriber's next lesson (forwards or back).

    Example:

    \b
        rekindle-mail subscribers jump ada@example.org 4
    """
    with rt.session() as session:
        sub = progress.jump(session, email, week, rt.course, rt.now(), rt.settings.windows)
        due = reports.iso(sub.next_due_at, sub.timezone)
        click.echo(f"{sub.email} continues with lesson {week}, due {due} ({sub.status})")


@group.command("reminders")
@click.argument("email")
@click.argument("switch", type=click.Choice(["on", "off"]))
@pass_runtime
def reminders(rt: Runtime, email: str, switch: str) -> None:
    """Switch the mid-week practice reminders on or off for one subscriber.

    Example:

    \b
        rekindle-mail subscribers reminders ada@example.org off
    """
    with rt.session() as session:
        sub = pace.set_reminders(session, email, switch == "on", rt.now(), history.OPERATOR)
        click.echo(f"mid-week reminders {switch} for {sub.email}")
