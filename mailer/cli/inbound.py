"""`rekindle-mail inbound`: list commands by email, bounce and feedback reports, from stdin
or IMAP."""

from __future__ import annotations

import logging
import sys
from typing import BinaryIO

import click
from sqlalchemy.exc import SQLAlchemyError

from mailer.app import signup
from mailer.cli.output import log_to_stderr
from mailer.errors import DatabaseError, TemporaryError, describe
from mailer.inbound import classify as inbound
from mailer.inbound.handle import handle
from mailer.inbound.mailbox import ImapMailbox
from mailer.masking import url_passwords
from mailer.runtime import Runtime

log = logging.getLogger("rekindle.inbound")


@click.command("inbound")
@click.option(
    "--imap", "imap_url", metavar="URL", help="Poll this mailbox, e.g. imaps://user@host/INBOX."
)
@click.option(
    "--recipient",
    multiple=True,
    metavar="ADDRESS",
    help="The envelope recipient the MTA delivered to (Postfix: ${original_recipient}).",
)
@click.pass_context
def inbound_(ctx: click.Context, imap_url: str | None, recipient: tuple[str, ...]) -> None:
    """Handle mail sent to the list: one message on stdin, or the unseen ones in a mailbox.

    A message whose subject or first line is `subscribe` starts the double
    opt-in for its sender; `unsubscribe` (or any message to the configured
    unsubscribe_address) unsubscribes the sender; a bounce report marks a
    subscriber bounced only when it proves it concerns a message we sent them
    (it came back to their VERP address, or quotes our signed Message-ID); a
    feedback report ("this is spam", RFC 5965) proved the same way marks them
    complained: no more mail of any kind.
    Anything else is logged and ignored; a message that cannot be read is
    logged and skipped (IMAP: marked seen, or moved to imap_quarantine).
    Exits 0 once the message is handled, 75 if it must be offered again later.

    Example:

    \b
        # /etc/postfix/master.cf:  rekindle unix - n n - - pipe
        #   flags=Rq user=rekindle argv=/usr/bin/rekindle-mail inbound
        #   --recipient ${original_recipient}
        rekindle-mail inbound < message.eml
        REKINDLE_IMAP_PASSWORD=... rekindle-mail inbound --imap imaps://list@mail.example.org/INBOX
    """
    rt: Runtime = ctx.ensure_object(Runtime)
    log_to_stderr("rekindle-mail inbound: %(message)s")
    if imap_url:
        # Error lines blot out every secret the run knows: this one too (cli/__init__).
        ctx.meta.setdefault("rekindle.secrets", set()).update(url_passwords(imap_url))
    try:
        if imap_url is None:
            raw = sys.stdin.buffer.read(inbound.MAX_BYTES + 1)
            if len(raw) > inbound.MAX_BYTES:
                _drain(sys.stdin.buffer)
            _handle_or_skip(rt, raw, recipient)
            return
        _poll(rt, imap_url, recipient)
    except (DatabaseError, SQLAlchemyError) as exc:
        # Exit 75 so the MTA keeps the message (or the mailbox keeps it unseen) for later.
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        raise TemporaryError(f"cannot record the message now: {reason}") from None


def _poll(rt: Runtime, imap_url: str, recipient: tuple[str, ...]) -> None:
    mailbox = ImapMailbox(
        imap_url, password=rt.settings.imap_password, ca_file=rt.settings.tls_ca_file
    )
    handled = skipped = 0
    with mailbox:
        for uid, raw in mailbox.unseen(max_bytes=inbound.MAX_BYTES):
            if _handle_or_skip(rt, raw, recipient):
                mailbox.mark_seen(uid)
                handled += 1
            else:
                mailbox.set_aside(uid, rt.settings.imap_quarantine)
                skipped += 1
    note = f", skipped {skipped}" if skipped else ""
    click.echo(f"handled {handled} message(s){note} from {mailbox.description}")


def _handle_or_skip(rt: Runtime, raw: bytes | None, recipients: tuple[str, ...]) -> bool:
    """Handle one message; False (after a warning line) when it had to be skipped.

    Database errors are not the message's fault: they propagate (exit 75).
    """
    try:
        if raw is None:
            raise inbound.Unreadable(f"larger than {inbound.MAX_BYTES // (1024 * 1024)} MB")
        _handle(rt, raw, recipients)
    except (DatabaseError, SQLAlchemyError):
        raise
    except inbound.Unreadable as exc:
        log.warning("skipped a message that cannot be handled: %s", exc)
        return False
    except Exception as exc:  # one bad message must never stall the mail after it
        log.debug("unexpected error", exc_info=True)
        log.warning("skipped a message that cannot be handled: %s", describe(exc)[:200])
        return False
    return True


def _drain(stream: BinaryIO) -> None:
    """Read the rest of an oversized message, so the MTA's pipe sees it taken."""
    while stream.read(1 << 20):
        pass


def _handle(rt: Runtime, raw: bytes, recipients: tuple[str, ...]) -> None:
    settings = rt.settings
    message = inbound.parse(raw)
    with rt.session() as session:
        composer = rt.composer(session)
        outcome = handle(
            session,
            message,
            composer=composer,
            unsubscribe_address=settings.unsubscribe_address,
            recipients=recipients,
            timezone=settings.timezone,
            now=rt.now(),
        )
        log.info(outcome.summary())
        report = signup.deliver_notices(
            session, rt.transport, composer, [outcome.confirmation], rt.now()
        )
        if report.skipped:
            # The request is stored and the confirmation queued: `send` delivers it later.
            log.warning("confirmation %s", report.skipped)
