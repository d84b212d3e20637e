"""`rekindle-mail broadcast create|list|send|preview`: one-off newsletters to a segment."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.app import broadcasts
from mailer.cli.output import print_json, table
from mailer.errors import InvalidInput
from mailer.runtime import Runtime
from mailer.timing import parse_instant

pass_runtime = click.make_pass_decorator(Runtime)


@click.group("broadcast")
def group() -> None:
    """One-off newsletters, in the course's look, to a segment of subscribers.

    Example:

    \b
        id=$(rekindle-mail broadcast create --subject "A note" --body note.md)
        rekindle-mail broadcast send "$id"
    """


@group.command("create")
@click.option("--subject", required=True, help="The subject line.")
@click.option(
    "--body",
    "body_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A Markdown file; {{ first_name }} greets each reader.",
)
@click.option(
    "--segment",
    type=click.Choice(list(broadcasts.SEGMENTS)),
    default="active",
    show_default=True,
    help="Who gets it: active, completed, or all (active, paused and completed).",
)
@pass_runtime
def create(rt: Runtime, subject: str, body_file: Path, segment: str) -> None:
    """Store a broadcast and print its id (nothing is sent until `broadcast send`).

    Example:

    \b
        rekindle-mail broadcast create --subject "Six months on" --body note.md --segment all
    """
    try:
        body = body_file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{body_file} is not UTF-8 text") from None
    with rt.session() as session:
        broadcast = broadcasts.create(session, rt.renderer, subject, body, segment, rt.now())
        click.echo(broadcast.id)


@group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_runtime
def list_(rt: Runtime, as_json: bool) -> None:
    """List broadcasts, newest first, with how many went out.

    Example:

    \b
        rekindle-mail broadcast list
    """
    with rt.session() as session:
        rows = broadcasts.overview(session)
    if as_json:
        print_json(rows)
        return
    table(
        ("ID", "SEGMENT", "QUEUED FOR", "SENT", "WAITING", "FAILED", "SEND FROM", "SUBJECT"),
        (
            (
                r["id"],
                r["segment"],
                r["recipients"] if r["queued_at"] else "-",
                r["sent"],
                r["waiting"],
                r["failed"],
                r["send_at"] or "-",
                r["subject"],
            )
            for r in rows
        ),
    )


@group.command("send")
@click.argument("broadcast_id", metavar="ID", type=int)
@click.option("--at", "at_text", metavar="INSTANT", help="Not before this ISO-8601 instant.")
@pass_runtime
def send(rt: Runtime, broadcast_id: int, at_text: str | None) -> None:
    """Queue broadcast ID for everyone in its segment.

    The normal `send` runs deliver it inside each subscriber's send window,
    exactly once each, never to anyone unsubscribed or bounced.

    Example:

    \b
        rekindle-mail broadcast send 3 --at 2026-12-01T08:00:00+00:00
    """
    now = rt.now()
    send_at = parse_instant(at_text, "--at") if at_text else now
    with rt.session() as session:
        queued = broadcasts.queue(session, rt.composer(session), broadcast_id, send_at, now)
        click.echo(
            f"queued broadcast {queued.id} for {queued.recipients} subscribers "
            f"({queued.segment}); `send` delivers it from {send_at.isoformat()} "
            "inside each subscriber's window"
        )


@group.command("preview")
@click.argument("broadcast_id", metavar="ID", type=int)
@click.option("--text", "as_text", is_flag=True, help="The plain-text part instead of the HTML.")
@pass_runtime
def preview(rt: Runtime, broadcast_id: int, as_text: bool) -> None:
    """Show broadcast ID as a sample subscriber will see it.

    Example:

    \b
        rekindle-mail broadcast preview 3 --text
    """
    with rt.session() as session:
        text, html = broadcasts.preview(session, rt.renderer, rt.settings, broadcast_id)
    click.echo((text if as_text else html).replace("\r\n", "\n"), nl=False)
