"""`rekindle-mail subscribers pause|resume|unsubscribe|set`: the reader's controls, by hand."""

from __future__ import annotations

import click

from mailer.app import history, pace
from mailer.cli.subscribers import group
from mailer.reports import summary as reports
from mailer.runtime import Runtime
from mailer.timing import TimeOfDay
from subscribers.models import Subscriber

pass_runtime = click.make_pass_decorator(Runtime)


@group.command("pause")
@click.argument("email")
@click.option(
    "--weeks",
    type=click.IntRange(1, pace.MAX_WEEKS_OFF),
    help=f"Instead of pausing: move the next lesson N weeks on (at most {pace.MAX_WEEKS_OFF} "
    "per lesson); they stay active.",
)
@pass_runtime
def pause(rt: Runtime, email: str, weeks: int | None) -> None:
    """Hold course mail for a subscriber until `resume`, or give them weeks off.

    With --weeks N the next lesson comes N weeks later, at the same local time,
    exactly as "take a week off" on their course page does N times; the course
    then goes on weekly from there.

    Example:

    \b
        rekindle-mail subscribers pause ada@example.org
        rekindle-mail subscribers pause ada@example.org --weeks 2
    """
    with rt.session() as session:
        if weeks is None:
            sub = pace.pause(session, email, rt.now(), history.OPERATOR)
            click.echo(f"paused {sub.email}")
            return
        sub = pace.week_off(session, email, rt.now(), history.OPERATOR, weeks)
        click.echo(f"{sub.email}: lesson {sub.next_lesson} moves {weeks} week(s) on; {_due(sub)}")


@group.command("resume")
@click.argument("email")
@pass_runtime
def resume(rt: Runtime, email: str) -> None:
    """Continue a paused subscriber: the next lesson goes out at the next window.

    Never sooner than a week after the local date of their last lesson.

    Example:

    \b
        rekindle-mail subscribers resume ada@example.org
    """
    with rt.session() as session:
        sub = pace.resume(session, email, rt.now(), rt.settings.windows, history.OPERATOR)
        click.echo(f"resumed {sub.email}; lesson {sub.next_lesson} is {_due(sub)}")


@group.command("unsubscribe")
@click.argument("email")
@pass_runtime
def unsubscribe(rt: Runtime, email: str) -> None:
    """Unsubscribe someone: no more mail, their record is kept.

    Example:

    \b
        rekindle-mail subscribers unsubscribe ada@example.org
    """
    with rt.session() as session:
        sub = pace.leave(session, email, rt.now(), history.OPERATOR)
        click.echo(f"unsubscribed {sub.email}")


@group.command("set")
@click.argument("email")
@click.option("--timezone", "zone", metavar="TZ", help="IANA time zone, e.g. Asia/Tokyo.")
@click.option(
    "--time-of-day",
    type=click.Choice([t.value for t in TimeOfDay]),
    help="morning (send_window) or evening (evening_window).",
)
@pass_runtime
def set_(rt: Runtime, email: str, zone: str | None, time_of_day: str | None) -> None:
    """Change when a subscriber's letters come: their time zone, their time of day.

    The next lesson keeps its local date and moves to the start of the new
    window in the new zone; if that moment has passed it goes out at the next
    run inside the window. Nothing already sent goes again; nothing is skipped.

    Example:

    \b
        rekindle-mail subscribers set ada@example.org --timezone Asia/Tokyo
        rekindle-mail subscribers set ada@example.org --time-of-day evening
    """
    if zone is None and time_of_day is None:
        raise click.UsageError("give --timezone, --time-of-day or both")
    windows = rt.settings.windows
    with rt.session() as session:
        sub = pace.set_when(
            session,
            email,
            rt.now(),
            windows,
            history.OPERATOR,
            zone=zone,
            time_of_day=time_of_day,
        )
        window = windows.of(sub.time_of_day)
        click.echo(f"{sub.email}: {sub.time_of_day} ({window}) in {sub.timezone}; {_due(sub)}")


def _due(sub: Subscriber) -> str:
    if sub.status != "active" or sub.next_due_at is None:
        return f"they are {sub.status}"
    return f"lesson {sub.next_lesson} is due {reports.iso(sub.next_due_at, sub.timezone)}"
