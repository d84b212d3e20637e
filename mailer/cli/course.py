"""`rekindle-mail course list|check`, `preview WEEK` and `test-send EMAIL WEEK`."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.app import progress, samples
from mailer.app.pace import weeks_off_taken
from mailer.cli.output import print_json, table, warn
from mailer.content import checks
from mailer.runtime import Runtime
from mailer.timing import TimeOfDay
from subscribers.validation import normalize_email

pass_runtime = click.make_pass_decorator(Runtime)


@click.group("course")
def group() -> None:
    """Inspect and validate the course content under templates/.

    Example:

    \b
        rekindle-mail course check
    """


@group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_runtime
def list_(rt: Runtime, as_json: bool) -> None:
    """List the lessons in the order they are sent.

    Example:

    \b
        rekindle-mail course list
    """
    rows = [
        {
            "week": lesson.number,
            "key": lesson.key,
            "title": lesson.title,
            "subject": lesson.subject,
            "preheader": lesson.preheader,
            "source": lesson.source,
        }
        for lesson in rt.course.lessons
    ]
    if as_json:
        print_json(rows)
    else:
        table(("WEEK", "KEY", "SUBJECT"), ((r["week"], r["key"], r["subject"]) for r in rows))


@group.command("check")
@pass_runtime
def check(rt: Runtime) -> None:
    """Render every lesson for a sample subscriber and check the result.

    Fails with a clear message on any manifest or template error.

    Example:

    \b
        rekindle-mail course check
    """
    result = checks.check_course(rt.renderer, rt.settings)
    for note in result.notes:
        warn(note)
    click.echo(
        f"course OK: {len(result.words)} lessons in {rt.course.directory} "
        f"({', '.join(str(w) for w in result.words)} words)"
    )


@click.command("preview")
@click.argument("week", type=int, required=False)
@click.option("--text", "as_text", is_flag=True, help="The plain-text part instead of the HTML.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), help="Write to FILE."
)
@click.option(
    "--timeline",
    "timeline_of",
    metavar="EMAIL",
    help="Instead: when each remaining lesson and reminder will reach EMAIL.",
)
@pass_runtime
def preview(
    rt: Runtime, week: int | None, as_text: bool, output: str | None, timeline_of: str | None
) -> None:
    """Render lesson WEEK for a sample subscriber (HTML by default), or show a timeline.

    Example:

    \b
        rekindle-mail preview 3 -o week3.html
        rekindle-mail preview --timeline ada@example.org
    """
    if timeline_of:
        _timeline(rt, timeline_of)
        return
    if week is None:
        raise click.UsageError("give a WEEK to preview, or --timeline EMAIL")
    text, html = checks.sample(rt.renderer, rt.settings, week)
    body = text if as_text else html
    body = body.replace("\r\n", "\n")
    if output and output != "-":
        Path(output).write_text(body, encoding="utf-8")
        click.echo(f"wrote lesson {week} to {output}", err=True)
    else:
        click.echo(body, nl=False)


def _timeline(rt: Runtime, email: str) -> None:
    with rt.session() as session:
        sub, planned = progress.timeline(session, email, rt.course, rt.settings.windows, rt.now())
    if not planned:
        click.echo(f"{sub.email} is {sub.status}: nothing more is scheduled")
        return
    if sub.time_of_day != TimeOfDay.MORNING:
        window = rt.settings.windows.of(sub.time_of_day)
        click.echo(f"{sub.email} reads in the {sub.time_of_day} ({window} {sub.timezone} time)")
    if weeks_off_taken(sub):
        click.echo(f"lesson {sub.next_lesson} has {weeks_off_taken(sub)} week(s) off")
    if sub.status == "paused":
        click.echo(f"{sub.email} is paused; if resumed now:")
    subjects = {lesson.key: lesson.subject for lesson in rt.course.lessons}
    subjects |= {lesson.reminder_key: lesson.reminder_subject or "" for lesson in rt.course.lessons}
    table(
        ("WHEN", "ZONE", "KEY", "SUBJECT"),
        (
            (f"{p.at:%a %Y-%m-%d %H:%M}", sub.timezone, p.key, subjects.get(p.key, ""))
            for p in planned
        ),
    )


@click.command("test-send")
@click.argument("email")
@click.argument("week", type=int, required=False)
@click.option("--all", "everything", is_flag=True, help="The whole course, every message.")
@pass_runtime
def test_send(rt: Runtime, email: str, week: int | None, everything: bool) -> None:
    """Send lesson WEEK (or, with --all, the whole course) to EMAIL now.

    Outside the schedule and the ledger: nothing is recorded. If EMAIL is a
    subscriber, the messages are personalised for them. --all sends the
    confirmation, the welcome, and every lesson with its reminder, in order,
    so you can read the course as a subscriber will.

    Example:

    \b
        rekindle-mail test-send me@example.org 1
        rekindle-mail test-send me@example.org --all
    """
    if everything == (week is not None):
        raise click.UsageError("give either a WEEK or --all")
    address = normalize_email(email)
    keys = samples.sample_keys(rt.course, week)
    with rt.session() as session:
        where = samples.send_samples(
            session, rt.composer(session), rt.transport, address, keys, rt.now()
        )
    what = f"lesson {week}" if week is not None else f"the whole course ({len(keys)} messages)"
    click.echo(f"sent {what} to {address} via {where}")
