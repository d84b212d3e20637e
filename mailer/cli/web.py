"""`rekindle-mail serve`: the sign-up, confirmation, unsubscribe, letter and course pages."""

from __future__ import annotations

import signal

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

    Pages: / (sign-up form), /confirm/<token> (GET shows a button, POST
    confirms), /unsubscribe/<token> (GET shows a button, POST unsubscribes,
    RFC 8058 one-click), /letters/<token> (a letter), /course/<token> (the
    reader's course page: GET shows it, each control is a POST). Posts from
    other sites get 403, bodies over 16 KB 413. Confirmations and welcomes
    leave from a background sender a moment after the page is answered. Put
    it behind your buffering HTTPS reverse proxy at `base_url` and set
    proxy_hops to the number of proxies, so rate limits see the real client
    address; then listen only where those proxies reach it.

    Example:

    \b
        rekindle-mail serve --host 127.0.0.1 --port 8080
    """
    from waitress import serve as run_wsgi

    from mailer.web import courier_of, create_app
    from mailer.web.guard import server_options

    log_to_stderr("%(asctime)s %(name)s %(message)s", "waitress")
    app = create_app(rt)
    hops = rt.settings.proxy_hops
    behind = f", behind {hops} prox{'y' if hops == 1 else 'ies'}" if hops else ""
    click.echo(
        f"serving {rt.course.title} on http://{host}:{port}/ "
        f"(public URL {rt.settings.base_url}{behind})",
        err=True,
    )
    signal.signal(signal.SIGTERM, _stop)  # waitress ends its loop on SystemExit
    try:
        run_wsgi(
            app,
            host=host,
            port=port,
            threads=threads,
            ident="rekindle-mail",
            **server_options(rt.settings),
        )
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    finally:
        courier_of(app).shutdown()  # no sign-up that was answered is lost


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0)
