"""`rekindle-mail subscribers ...`: add, import, list, show, erase, export."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import IO

import click
from sqlalchemy.orm import Session

from mailer.app import enrolment, signup
from mailer.cli.output import print_json, table
from mailer.errors import InvalidInput, TransportUnavailable
from mailer.files import private_file
from mailer.reports import summary as reports
from mailer.runtime import Runtime
from subscribers import csvfile
from subscribers.models import Status
from subscribers.validation import normalize_email

pass_runtime = click.make_pass_decorator(Runtime)
EXPORT_COLUMNS = (
    "email",
    "name",
    "timezone",
    "status",
    "lessons_sent",
    "next_lesson",
    "next_due",
    "source",
    "created_at",
    "confirmed_at",
    "time_of_day",
    "reminders",
)


@click.group("subscribers")
def group() -> None:
    """Manage the people on the course.

    Example:

    \b
        rekindle-mail subscribers add ada@example.org --name "Ada" --timezone Europe/London
    """


@group.command("add")
@click.argument("email")
@click.option("--name", help="Display name; the first word greets them in each lesson.")
@click.option("--timezone", "tz", help="IANA time zone, e.g. America/Chicago (default: config).")
@click.option(
    "--double-opt-in",
    is_flag=True,
    help="Store them as pending and send a confirmation email; the course starts when they "
    "follow its link.",
)
@pass_runtime
def add(rt: Runtime, email: str, name: str | None, tz: str | None, double_opt_in: bool) -> None:
    """Add a subscriber as active: lesson 1 goes out at their next send window.

    The operator vouches for the person's consent. With --double-opt-in the
    person must confirm by following the link in a confirmation email first
    (the same flow as the web form).

    Example:

    \b
        rekindle-mail subscribers add sam@example.org --name "Sam Lee" --timezone Asia/Tokyo
        rekindle-mail subscribers add kim@example.org --double-opt-in
    """
    with rt.session() as session:
        if double_opt_in:
            _add_pending(rt, session, email, name, tz or rt.settings.timezone)
            return
        sub = enrolment.add_subscriber(
            session,
            email,
            name=name,
            timezone=tz or rt.settings.timezone,
            now=rt.now(),
            window=rt.settings.send_window,
        )
        due = reports.iso(sub.next_due_at, sub.timezone)
        click.echo(f"added {sub.email} ({sub.timezone}); lesson 1 is due {due}")


def _add_pending(rt: Runtime, session: Session, email: str, name: str | None, tz: str) -> None:
    address = normalize_email(email)
    composer = rt.composer(session)
    result, report = signup.invite(
        session, composer, rt.transport, address, name=name, timezone=tz, now=rt.now()
    )
    if result.confirmation is None:
        click.echo(f"{address} is pending; a confirmation went out less than 24 hours ago")
        return
    if report.failures:
        raise click.ClickException(
            f"{address} is pending, but the confirmation failed: {report.failures[0]['reply']}"
        )
    if report.skipped:
        raise TransportUnavailable(f"{address} is pending; the confirmation is {report.skipped}")
    if report.sent:
        click.echo(f"{address} is pending; sent a confirmation via {rt.transport().description}")
    else:
        click.echo(f"{address} is pending; the confirmation is queued and `send` will retry it")


@group.command("import")
@click.argument("file", type=click.File("rb"))
@click.option("--dry-run", is_flag=True, help="Check the file and report, but store nothing.")
@pass_runtime
def import_(rt: Runtime, file: IO[bytes], dry_run: bool) -> None:
    """Import subscribers from a CSV file with the header email,name,timezone.

    Rows without a status are stored as active; every rejected row is reported
    with its line number and reason, and the command then exits with status 1.
    Addresses already subscribed are skipped and keep their state.

    A file written by `subscribers export` restores each person as they were:
    their status (nobody unsubscribed, bounced or unconfirmed becomes active;
    pending people get no confirmation email), their consent record
    (created_at, confirmed_at, source), their next lesson and their own choices
    (time_of_day, reminders). The file may be
    UTF-8 (with or without a byte-order mark) or UTF-16 with a byte-order mark.

    Example:

    \b
        rekindle-mail subscribers import people.csv --dry-run
        rekindle-mail subscribers import backup.csv
    """
    name = getattr(file, "name", "-")
    try:
        text = csvfile.decode(file.read())
    except InvalidInput as exc:
        raise InvalidInput(f"{name}: {exc}") from None
    now = rt.now()
    rows = csvfile.read_rows(io.StringIO(text, newline=""), now=now, lessons=rt.course.total)
    with rt.session() as session:
        report = enrolment.import_subscribers(
            session,
            rows,
            default_timezone=rt.settings.timezone,
            now=now,
            windows=rt.settings.windows,
            dry_run=dry_run,
        )
    for bad in report.rejected:
        click.echo(f"{name}: line {bad.line}: {bad.reason}", err=True)
    verb = "would import" if dry_run else "imported"
    kinds = ""
    if set(report.statuses) - {Status.ACTIVE}:
        kinds = " (" + ", ".join(f"{n} {s}" for s, n in sorted(report.statuses.items())) + ")"
    click.echo(
        f"{verb} {report.imported}{kinds}, skipped {len(report.existing)} already subscribed, "
        f"rejected {len(report.rejected)}"
    )
    if report.rejected:
        raise SystemExit(1)


@group.command("list")
@click.option("--status", type=click.Choice([s.value for s in Status]), help="Only this status.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_runtime
def list_(rt: Runtime, status: str | None, as_json: bool) -> None:
    """List subscribers with their progress through the course.

    Example:

    \b
        rekindle-mail subscribers list --status active --json
    """
    with rt.session() as session:
        rows = list(reports.subscriber_rows(session, status))
    if as_json:
        print_json(rows)
        return
    table(
        ("EMAIL", "NAME", "TIMEZONE", "STATUS", "SENT", "NEXT", "NEXT DUE"),
        (
            (
                r["email"],
                r["name"],
                r["timezone"],
                r["status"],
                r["lessons_sent"],
                r["next_lesson"],
                r["next_due"],
            )
            for r in rows
        ),
    )


@group.command("show")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_runtime
def show(rt: Runtime, email: str, as_json: bool) -> None:
    """Show one subscriber, their delivery history and who changed their course when.

    Example:

    \b
        rekindle-mail subscribers show ada@example.org
    """
    with rt.session() as session:
        view = reports.subscriber_detail(session, email)
    if as_json:
        print_json(view)
        return
    for key in (
        "email",
        "name",
        "timezone",
        "time_of_day",
        "reminders",
        "status",
        "lessons_sent",
        "next_lesson",
        "next_due",
        "source",
        "created_at",
        "started_at",
        "confirmed_at",
    ):
        value = view[key]
        if isinstance(value, bool):
            value = "on" if value else "off"
        click.echo(f"{key + ':':<14}{'' if value is None else value}")
    if view["deliveries"]:
        click.echo()
        table(
            ("KEY", "STATUS", "SENT AT", "ATTEMPTS", "LAST ERROR"),
            (
                (d["key"], d["status"], d["sent_at"], d["attempts"], d["last_error"])
                for d in view["deliveries"]
            ),
        )
    if view["history"]:
        click.echo()
        table(
            ("CHANGED AT", "BY", "VIA", "CHANGE", "DETAIL"),
            ((h["at"], h["by"], h["via"], h["change"], h["detail"]) for h in view["history"]),
        )


@group.command("remove")
@click.argument("email")
@pass_runtime
def remove(rt: Runtime, email: str) -> None:
    """Erase a subscriber and their delivery history (GDPR right to erasure).

    Example:

    \b
        rekindle-mail subscribers remove ada@example.org
    """
    with rt.session() as session:
        address = enrolment.remove(session, email)
    click.echo(f"removed {address} and their delivery history")


@group.command("export")
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
@pass_runtime
def export(rt: Runtime, file: str | None) -> None:
    """Write all subscribers as CSV to FILE (or standard output).

    The first columns (email,name,timezone) are what `subscribers import` reads.

    Example:

    \b
        rekindle-mail subscribers export backup.csv
    """
    with rt.session() as session:
        rows = ([r[c] for c in EXPORT_COLUMNS] for r in reports.subscriber_rows(session))
        if file and file != "-":
            with private_file(Path(file)) as fh:  # 0600: personal data
                count = csvfile.write_rows(fh, EXPORT_COLUMNS, rows)
            click.echo(f"exported {count} subscribers to {file}", err=True)
        else:
            csvfile.write_rows(sys.stdout, EXPORT_COLUMNS, rows)


# restart, jump and reminders (mailer.cli.progress), pause, resume, unsubscribe and set
# (mailer.cli.pace) join this group; they need `group` first.
from mailer.cli import pace, progress  # noqa: E402, F401
