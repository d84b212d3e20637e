"""`rekindle-mail inbound`: list commands by email and bounce reports, from stdin or IMAP."""

from __future__ import annotations

import logging
import sys

import click
from sqlalchemy.exc import SQLAlchemyError

from mailer import dispatch, inbound
from mailer.cli.output import log_to_stderr
from mailer.errors import DatabaseError, TemporaryError, TransportUnavailable
from mailer.imap import ImapMailbox
from mailer.runtime import Runtime

pass_runtime = click.make_pass_decorator(Runtime)
log = logging.getLogger("rekindle.inbound")


@click.command("inbound")
@click.option(
    "--imap", "imap_url", metavar="URL", help="Poll this mailbox, e.g. imaps://user@host/INBOX."
)
@click.option(
    "--recipient",
    multiple=True,
    metavar="ADDRESS",
    help="The envelope recipient the MTA delivered to (Postfix: ${recipient}).",
)
@pass_runtime
def inbound_(rt: Runtime, imap_url: str | None, recipient: tuple[str, ...]) -> None:
    """Handle mail sent to the list: one message on stdin, or the unseen ones in a mailbox.

    A message whose subject or first line is `subscribe` starts the double
    opt-in for its sender; `unsubscribe` (or any message to the configured
    unsubscribe_address) unsubscribes the sender; a bounce report marks the
    failed recipients bounced. Anything else is logged and ignored. Exits 0
    once the message is handled, 75 if it must be offered again later.

    Example:

    \b
        # /etc/postfix/master.cf:  rekindle unix - n n - - pipe
        #   flags=Rq user=rekindle argv=/usr/bin/rekindle-mail inbound --recipient ${recipient}
        rekindle-mail inbound < message.eml
        REKINDLE_IMAP_PASSWORD=... rekindle-mail inbound --imap imaps://list@mail.example.org/INBOX
    """
    log_to_stderr("rekindle-mail inbound: %(message)s")
    try:
        if imap_url is None:
            _handle(rt, sys.stdin.buffer.read(), recipient)
            return
        mailbox = ImapMailbox(
            imap_url, password=rt.settings.imap_password, ca_file=rt.settings.tls_ca_file
        )
        handled = 0
        with mailbox:
            for uid, raw in mailbox.unseen():
                _handle(rt, raw, recipient)
                mailbox.mark_seen(uid)
                handled += 1
        click.echo(f"handled {handled} message(s) from {mailbox.description}")
    except (DatabaseError, SQLAlchemyError) as exc:
        # Exit 75 so the MTA keeps the message (or the mailbox keeps it unseen) for later.
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        raise TemporaryError(f"cannot record the message now: {reason}") from None


def _handle(rt: Runtime, raw: bytes, recipients: tuple[str, ...]) -> None:
    settings = rt.settings
    request = inbound.classify(
        inbound.parse(raw),
        unsubscribe_address=settings.unsubscribe_address,
        own_addresses=[settings.sender_email],
        recipients=recipients,
    )
    with rt.session() as session:
        composer = rt.composer(session)
        outcome = inbound.apply(
            session,
            request,
            timezone=settings.timezone,
            now=rt.now(),
            message_id=composer.message_id,
        )
        log.info(outcome.summary())
        if outcome.confirmation is None:
            return
        try:
            with rt.transport() as transport:
                dispatch.deliver_now(session, transport, composer, outcome.confirmation, rt.now())
        except TransportUnavailable as exc:
            # The request is stored and the confirmation queued: `send` delivers it later.
            log.warning("confirmation queued for the next send run: %s", exc)
