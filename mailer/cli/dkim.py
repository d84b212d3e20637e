"""`rekindle-mail dkim keygen`: a DKIM key, and the DNS record and settings that go with it."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.runtime import Runtime

pass_runtime = click.make_pass_decorator(Runtime)


@click.group("dkim")
def group() -> None:
    """DKIM signing keys (README, "Getting into the inbox").

    Example:

    \b
        rekindle-mail dkim keygen --selector rekindle
    """


@group.command("keygen")
@click.option("--selector", default="rekindle", show_default=True, help="The DNS selector (s=).")
@click.option(
    "--type",
    "kind",
    type=click.Choice(["rsa", "ed25519"]),
    default="rsa",
    show_default=True,
    help="rsa (2048 bits) is verified everywhere; many receivers do not verify ed25519 yet, "
    "so use ed25519 only beside an rsa key (dual signing).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the private key (default: dkim-<selector>.pem); never overwritten.",
)
@pass_runtime
def keygen(rt: Runtime, selector: str, kind: str, out: Path | None) -> None:
    """Make a private key (mode 0600) and print the TXT record to publish for it.

    The record goes at <selector>._domainkey.<dkim_domain, else from's domain>.
    For dual signing, make an rsa and an ed25519 key with different selectors and
    list both files in dkim_key_file.

    Example:

    \b
        rekindle-mail dkim keygen --selector rk2026 --out /etc/rekindle/dkim-rk2026.pem
        rekindle-mail dkim keygen --type ed25519 --selector rk2026e
    """
    from mailer.content.dkimkey import check_selector, keygen

    check_selector(selector)
    path = out or Path(f"dkim-{selector}.pem")
    domain = rt.settings.signing_domain
    if domain == "localhost":
        raise click.UsageError("set `from` (or dkim_domain) first: the record names its domain")
    key = keygen(kind, selector, domain, path)
    click.echo(f"Wrote the {kind} private key to {path} (mode 0600).")
    click.echo("")
    click.echo(f"Publish this TXT record at {key.dns_name}:")
    click.echo("")
    click.echo(f"  {key.zone_record}")
    click.echo("")
    click.echo("(In a DNS provider's web form, the value is one line:")
    click.echo(f"  {key.txt_record} )")
    click.echo("")
    click.echo("Then add to rekindle.toml (beside any key you already sign with):")
    click.echo("")
    click.echo(f'  dkim_key_file = "{path.resolve()}"')
    click.echo(f'  dkim_selector = "{selector}"')
