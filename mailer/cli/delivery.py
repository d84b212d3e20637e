"""`rekindle-mail send` and `rekindle-mail status`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from mailer.app import failures
from mailer.cli.output import interactive, print_json, table, warn
from mailer.errors import TransportUnavailable
from mailer.reports import summary as reports
from mailer.runtime import Runtime
from mailer.send.report import SendReport
from mailer.store.models import DeliveryStatus

pass_runtime = click.make_pass_decorator(Runtime)
# What each count of `status` means (as the README's "What `status` and `send` count" says).
LEGEND = (
    "SENT..SENDING: messages by state. DEFERRED: tried and put off by the server (4xx,",
    "  a timeout, a dropped connection) or by a run that died; retried with backoff.",
    "  QUEUED: not tried yet. SENDING: a run has it now.",
    "DUE NOW: what `send` would deliver at this instant, inside each reader's window.",
    "NEXT 24H: due later today, or due but waiting for the reader's window or a retry.",
)
NOW_HELP = "Behave as if the clock read this ISO-8601 instant (overrides REKINDLE_NOW)."


@click.command("send")
@click.option("--now", "now_text", metavar="INSTANT", help=NOW_HELP)
@click.option("--dry-run", is_flag=True, help="Report what is due without sending or recording.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as a JSON object.")
@click.option(
    "--connections",
    type=click.IntRange(1, 32),
    help="SMTP connections to use at once (default: smtp_connections, else 1).",
)
@click.option(
    "--retry-failed",
    is_flag=True,
    help="First put failed deliveries (not to bounced people) back in the queue.",
)
@pass_runtime
def send(
    rt: Runtime,
    now_text: str | None,
    dry_run: bool,
    as_json: bool,
    connections: int | None,
    retry_failed: bool,
) -> None:
    """Deliver every lesson that is due now, then print a one-line summary.

    Meant for cron: run it as often as you like (every 15 minutes is typical);
    nothing is ever sent twice. Exits 75 when the mail server cannot be reached,
    leaving the due mail waiting for the next run.

    Example:

    \b
        rekindle-mail send --json
    """
    now = rt.now(now_text)
    if not dry_run:
        for note in rt.warnings():
            warn(note)
    if retry_failed and not dry_run:
        with rt.session() as session:
            retry = failures.retry_failed(session, now, rt.settings.windows)
        for skipped in retry.skipped:
            warn(f"not retried: {skipped}")
        if retry.requeued:
            click.echo(f"put {len(retry.requeued)} failed deliveries back in the queue", err=True)
    try:
        with _progress(interactive() and not as_json) as bar:
            report = rt.send_run(now, dry_run=dry_run, progress=bar, connections=connections)
    except TransportUnavailable as exc:
        _print(getattr(exc, "report", SendReport()), as_json)
        raise
    _print(report, as_json)


@contextmanager
def _progress(show: bool) -> Iterator[Any]:
    """A progress bar on stderr for people at a terminal; None under cron."""
    if not show:
        yield None
        return
    with click.progressbar(length=0, label="Sending", file=click.get_text_stream("stderr")) as bar:  # type: ignore[operator]
        yield bar


def _print(report: SendReport, as_json: bool) -> None:
    if as_json:
        print_json(report.as_dict())
    else:
        click.echo(report.summary())


@click.command("status")
@click.option("--now", "now_text", metavar="INSTANT", help=NOW_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_runtime
def status(rt: Runtime, now_text: str | None, as_json: bool) -> None:
    """Subscribers by status, deliveries by lesson, what is due, recent failures.

    Example:

    \b
        rekindle-mail status --json
    """
    with rt.session() as session:
        summary = reports.status_summary(session, rt.now(now_text), rt.settings.windows, rt.course)
    summary["delivery"] = rt.transport().description
    summary["database"] = rt.settings.database_display
    if as_json:
        print_json(summary)
        return
    counts = summary["subscribers"]
    listed = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    click.echo(f"Subscribers: {summary['total_subscribers']}" + (f" ({listed})" if listed else ""))
    click.echo(
        f"Due now: {summary['due_now']} (what `send` would deliver at this instant); "
        f"next due: {summary['next_due'] or '-'}"
    )
    click.echo(f"Mail goes to {summary['delivery']}; database {summary['database']}")
    click.echo(_complaints(summary["complaints"]))
    run = summary["last_run"]
    if run is None:
        click.echo("Last run: never")
    else:
        outcome = run["outcome"] + (f" ({run['message']})" if run["message"] else "")
        click.echo(
            f"Last run: {run['started_at']}, {outcome}: sent {run['sent']}, "
            f"failed {run['failed']}, deferred {run['deferred']}"
        )
    keys = sorted({*summary["deliveries"], *summary["due"]}, key=reports.key_order)
    if keys:
        click.echo()
        columns = ("sent", "failed", "deferred", "queued", "sending")
        empty = dict.fromkeys(columns, 0)
        table(
            ("KEY", "SENT", "FAILED", "DEFERRED", "QUEUED", "SENDING", "DUE NOW", "NEXT 24H"),
            (
                [
                    key,
                    *(summary["deliveries"].get(key, empty)[c] for c in columns),
                    summary["due"].get(key, {}).get("now", 0),
                    summary["due"].get(key, {}).get("next_24h", 0),
                ]
                for key in keys
            ),
        )
        click.echo()
        for line in LEGEND:
            click.echo(line)
    if summary["recent_failures"]:
        click.echo()
        click.echo("Recent failures:")
        for f in summary["recent_failures"]:
            click.echo(f"  {f['at']}  {f['email']}  {f['key']}  {f['status']}: {f['reply']}")


def _complaints(c: dict[str, Any]) -> str:
    """'Complaints: 3 (0.12 % of 2,500 readers mailed in the last 30 days; Gmail's limit is
    0.3 %)'."""
    days, limit = c["days"], f"Gmail's limit is {c['gmail_limit'] * 100:g} %"
    if not c["mailed"]:
        share = f"no reader mailed in the last {days} days"
    else:
        share = f"{c['rate'] * 100:.2f} % of {c['mailed']:,} readers mailed in the last {days} days"
    return f"Complaints: {c['complaints']} ({share}; {limit})"


@click.group("deliveries")
def deliveries() -> None:
    """Look into individual deliveries.

    Example:

    \b
        rekindle-mail deliveries list --failed
    """


@deliveries.command("list")
@click.option("--failed", is_flag=True, help="Only failed deliveries (same as --status failed).")
@click.option(
    "--status",
    "status_",
    type=click.Choice([s.value for s in DeliveryStatus]),
    help="Only deliveries in this state.",
)
@click.option("--key", help="Only this message, e.g. lesson-3 or broadcast-2.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@pass_runtime
def deliveries_list(
    rt: Runtime, failed: bool, status_: str | None, key: str | None, limit: int, as_json: bool
) -> None:
    """List deliveries, newest first, with the mail server's last reply.

    After fixing what made them fail, `send --retry-failed` puts failed ones
    back in the queue.

    Example:

    \b
        rekindle-mail deliveries list --failed --json
    """
    with rt.session() as session:
        rows = failures.list_deliveries(
            session, status=DeliveryStatus.FAILED if failed else status_, key=key, limit=limit
        )
    if as_json:
        print_json(rows)
        return
    table(
        ("WHEN", "EMAIL", "KEY", "STATUS", "ATTEMPTS", "LAST REPLY"),
        (
            (r["updated_at"], r["email"], r["key"], r["status"], r["attempts"], r["last_reply"])
            for r in rows
        ),
    )
