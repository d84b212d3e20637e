"""`rekindle-mail config show`: the settings in force and where each came from, secrets masked."""

from __future__ import annotations

import click

from mailer.cli.output import print_json, table
from mailer.runtime import Runtime
from mailer.settings_view import shown

pass_runtime = click.make_pass_decorator(Runtime)


@click.group("config")
def group() -> None:
    """Inspect the configuration.

    Example:

    \b
        rekindle-mail config show
    """


@group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_runtime
def show(rt: Runtime, as_json: bool) -> None:
    """Every setting, its value and its source (environment, file or default).

    Passwords and keys are shown as *** (set) or left empty (unset); they are
    never printed.

    Example:

    \b
        rekindle-mail config show --json
    """
    rows = shown(rt.config_path, rt.env)
    if as_json:
        print_json({key: {"value": value, "source": source} for key, value, source in rows})
        return
    table(("key", "value", "source"), rows)
