"""`rekindle-mail serve`: the sign-up, confirmation and unsubscribe pages."""

from __future__ import annotations

import click

from mailer.cli.output import log_to_stderr
from mailer.runtime import Runtime

pass_runtime = click.make_pass_decorator(Runtime)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64))
@pass_runtime
def serve(rt: Runtime, host: str, port: int, threads: int) -> None:
    """Serve the web face with a production WSGI server (waitress).

    Pages: / (sign-up form), /confirm/<token> (double opt-in), /unsubscribe/<token>
    (GET shows a button, POST unsubscribes, RFC 8058 one-click). Put it behind
    your HTTPS reverse proxy at `base_url`; set proxy_hops so rate limits see
    the real client address.

    Example:

    \b
        rekindle-mail serve --host 0.0.0.0 --port 8080
    """
    from waitress import serve as run_wsgi

    from mailer.web import create_app

    log_to_stderr("%(asctime)s %(name)s %(message)s", "waitress")
    app = create_app(rt)
    click.echo(
        f"serving {rt.course.title} on http://{host}:{port}/ (public URL {rt.settings.base_url})",
        err=True,
    )
    try:
        run_wsgi(app, host=host, port=port, threads=threads, ident="rekindle-mail")
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
