"""`rekindle-mail doctor`: DNS, configuration, relay and complaint checks, one line each."""

from __future__ import annotations

import click

from mailer.cli.output import print_json
from mailer.runtime import Runtime

pass_runtime = click.make_pass_decorator(Runtime)


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_runtime
def doctor(rt: Runtime, as_json: bool) -> None:
    """Check what decides whether mail reaches the inbox; exit 1 if anything is a problem.

    DNS of the From and bounce domains (SPF, DMARC, each DKIM selector, MX),
    the settings readers see (base_url, postal_address, reply_to, DKIM
    alignment), each relay (one connection: EHLO, TLS, QUIT; no mail is sent)
    and the complaint rate. Lookups go to dns_server when it is set.

    Example:

    \b
        rekindle-mail doctor
        REKINDLE_DNS_SERVER=9.9.9.9 rekindle-mail doctor --json
    """
    from mailer.doctor import diagnose, problems

    checks = diagnose(rt.settings, rt.session, rt.now())
    found = problems(checks)
    if as_json:
        print_json({"checks": [c.as_json() for c in checks], "problems": found})
    else:
        width = max(len(c.name) for c in checks)
        for check in checks:
            click.echo(f"{check.status!s:<8} {check.name:<{width}}  {check.detail}")
            if check.fix:
                click.echo(f"{'':<{width + 11}}fix: {check.fix}")
        warnings = sum(1 for c in checks if c.status == "warning")
        click.echo(f"{_count(found, 'problem')}, {_count(warnings, 'warning')}")
    if found:
        raise click.exceptions.Exit(1)


def _count(n: int, noun: str) -> str:
    return f"{n or 'no'} {noun}{'' if n == 1 else 's'}"
