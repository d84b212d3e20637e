"""`rekindle-mail course list|check`, `preview WEEK` and `test-send EMAIL WEEK`."""

from __future__ import annotations

from pathlib import Path

import click

from mailer import checks, enrolment
from mailer.cli.output import print_json, table, warn
from mailer.errors import NotFound, TransportUnavailable
from mailer.runtime import Runtime
from mailer.transport import DeliveryError, TemporaryFailure
from subscribers.validation import clean_name, normalize_email

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
@click.argument("week", type=int)
@click.option("--text", "as_text", is_flag=True, help="The plain-text part instead of the HTML.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), help="Write to FILE."
)
@pass_runtime
def preview(rt: Runtime, week: int, as_text: bool, output: str | None) -> None:
    """Render lesson WEEK for a sample subscriber (HTML by default).

    Example:

    \b
        rekindle-mail preview 3 -o week3.html
    """
    text, html = checks.sample(rt.renderer, rt.settings, week)
    body = text if as_text else html
    body = body.replace("\r\n", "\n")
    if output and output != "-":
        Path(output).write_text(body, encoding="utf-8")
        click.echo(f"wrote lesson {week} to {output}", err=True)
    else:
        click.echo(body, nl=False)


@click.command("test-send")
@click.argument("email")
@click.argument("week", type=int)
@pass_runtime
def test_send(rt: Runtime, email: str, week: int) -> None:
    """Send lesson WEEK to EMAIL now, outside the schedule and the ledger.

    If EMAIL is a subscriber, the message is personalised for them.

    Example:

    \b
        rekindle-mail test-send me@example.org 1
    """
    address = normalize_email(email)
    rt.course.lesson(week)
    with rt.session() as session:
        composer = rt.composer(session)
        try:
            sub = enrolment.find_subscriber(session, address)
            name = clean_name(sub.name)
        except NotFound:
            name = None
    message = composer.lesson(week, subscriber_id=None, email=address, name=name, date=rt.now())
    transport = rt.transport()
    try:
        with transport:
            transport.send(message)
    except TemporaryFailure as exc:
        raise TransportUnavailable(
            f"{transport.description} deferred the message: {exc.reply}"
        ) from None
    except DeliveryError as exc:
        raise click.ClickException(
            f"{transport.description} refused the message: {exc.reply}"
        ) from None
    click.echo(f"sent lesson {week} to {address} via {transport.description}")


COMMANDS = [group, preview, test_send]
