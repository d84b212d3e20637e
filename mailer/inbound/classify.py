"""Reading mail to the list: parsing within bounds, and what a message asks for.

`subscribe` and `unsubscribe` commands (in the subject or the first line),
mail to the unsubscribe address, bounce reports (read with flufl.bounce),
feedback reports (complaints: mailer.inbound.feedback), auto-replies; a
message that cannot be read is refused as Unreadable and skipped (README,
"Mail to the list").
"""

from __future__ import annotations

import email
import email.policy
import enum
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from typing import TYPE_CHECKING

from flufl.bounce import all_failures

from mailer.errors import RekindleError
from mailer.inbound import feedback
from subscribers.errors import InvalidInput
from subscribers.validation import normalize_email

if TYPE_CHECKING:
    pass

log = logging.getLogger("rekindle.inbound")

MAX_BYTES = 10 * 1024 * 1024  # a larger message is skipped unread
MAX_MULTIPARTS = 100  # multipart containers in one message: more is skipped unparsed

SUBSCRIBE_WORDS = frozenset({"subscribe", "join", "start"})
UNSUBSCRIBE_WORDS = frozenset({"unsubscribe", "leave", "remove", "stop"})
_REPLY_PREFIX = re.compile(r"^\s*((re|aw|fwd?|wg|sv)\s*:\s*)+", re.IGNORECASE)
_DAEMONS = ("mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon")
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status|failure|has failed)|returned mail|failure notice|"
    r"mail delivery (failed|system)|non.?delivery|could not be delivered",
    re.IGNORECASE,
)


class Action(enum.StrEnum):
    """What a message asks for."""

    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"  # a feedback report: the reader marked our mail as spam
    IGNORE = "ignore"


@dataclass(frozen=True)
class Request:
    """A classified inbound message: the action, whom it concerns, and why."""

    action: Action
    addresses: tuple[str, ...] = ()
    name: str | None = None
    reason: str = ""
    temporary: tuple[str, ...] = field(default=())
    senders: tuple[str, ...] = field(default=())  # a complaint's Original-Mail-From


class Unreadable(RekindleError):
    """One inbound message that cannot be handled; it is logged and skipped."""


def parse(raw: bytes) -> EmailMessage:
    """Parse an RFC 5322 message, bounding the work; raises Unreadable when it will not do.

    The parser recurses once per nested multipart and its cost grows with
    nesting, so a message with more multipart containers than any real report
    or command has is refused before parsing.
    """
    if len(raw) > MAX_BYTES:
        raise Unreadable(f"larger than {MAX_BYTES // (1024 * 1024)} MB")
    if raw.lower().count(b"multipart/") > MAX_MULTIPARTS:
        raise Unreadable(f"more than {MAX_MULTIPARTS} nested or sibling multiparts")
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
    except (RecursionError, MemoryError, ValueError, LookupError) as exc:
        raise Unreadable(f"cannot be parsed ({type(exc).__name__})") from None
    assert isinstance(message, EmailMessage)
    return message


def classify(
    message: EmailMessage,
    *,
    unsubscribe_address: str | None,
    own_addresses: Iterable[str] = (),
    recipients: Iterable[str] = (),
) -> Request:
    """Decide what `message` asks for.

    `recipients` are envelope recipients the MTA passed on (e.g. Postfix's
    ${recipient}); a message to the configured unsubscribe address unsubscribes
    its sender whatever it says. Feedback reports (RFC 5965) are complaints,
    except `not-spam` ones; bounce reports are recognised by shape and read
    with flufl.bounce; auto-replies and anything else are ignored.
    """
    try:
        return _classify(message, unsubscribe_address, own_addresses, recipients)
    except Exception:  # the stdlib header parser raises on some malformed headers
        log.debug("unreadable message", exc_info=True)
        return Request(Action.IGNORE, reason="an unreadable message (malformed headers)")


def _classify(
    message: EmailMessage,
    unsubscribe_address: str | None,
    own_addresses: Iterable[str],
    recipients: Iterable[str],
) -> Request:
    report = feedback.read(message)
    if report is not None:
        return _complaint(report)
    if _looks_like_bounce(message):
        return _bounce(message)
    if _automatic(message):
        return Request(Action.IGNORE, reason="an automatic reply")
    name, sender = parseaddr(str(message.get("From", "")))
    sender = _valid(sender) or ""
    if not sender:
        return Request(Action.IGNORE, reason="no valid sender address")
    own = {a.lower() for a in own_addresses}
    if sender.lower() in own:
        return Request(Action.IGNORE, reason="sent by rekindle-mail itself")
    to_us = {a.lower() for a in _recipients(message, recipients)}
    if unsubscribe_address and unsubscribe_address.lower() in to_us:
        return Request(Action.UNSUBSCRIBE, (sender,), reason="sent to the unsubscribe address")
    word = _command(message)
    if word in SUBSCRIBE_WORDS:
        return Request(Action.SUBSCRIBE, (sender,), name=name or None, reason=f"asked {word!r}")
    if word in UNSUBSCRIBE_WORDS:
        return Request(Action.UNSUBSCRIBE, (sender,), reason=f"asked {word!r}")
    return Request(Action.IGNORE, (sender,), reason="no subscribe or unsubscribe command")


def _bounce(message: EmailMessage) -> Request:
    """A delivery report: permanent failures bounce, delays are only noted."""
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # flufl.bounce's heuristic detectors can trip on odd reports
        log.debug("unreadable delivery report", exc_info=True)
        return Request(Action.IGNORE, reason="an unreadable delivery report")
    hard = tuple(sorted({a for a in map(_valid, permanent) if a}))
    soft = tuple(sorted({a for a in map(_valid, temporary) if a}))
    if hard:
        return Request(Action.BOUNCE, hard, reason="permanent delivery failure", temporary=soft)
    if soft:
        return Request(Action.IGNORE, soft, reason="a temporary delivery delay, not a bounce")
    return Request(Action.IGNORE, reason="a delivery report naming no failed recipient")


def _complaint(report: feedback.FeedbackReport) -> Request:
    """A feedback report: a complaint about whoever it proves (never its From, the provider),
    or, for `not-spam`, only a note."""
    named = tuple(sorted({a for a in map(_valid, report.recipients) if a}))
    if not report.complaint:
        reason = f"{report.describe()}: the reader says it is not spam, nothing to change"
        return Request(Action.IGNORE, named, reason=reason)
    return Request(Action.COMPLAINT, named, reason=report.describe(), senders=report.senders)


def _valid(address: bytes | str) -> str | None:
    """The address in normal form, or None when it is not a usable address."""
    text = address.decode("utf-8", "replace") if isinstance(address, bytes) else address
    try:
        return normalize_email(text.strip().strip("<>"))
    except InvalidInput:
        return None


def _looks_like_bounce(message: EmailMessage) -> bool:
    if message.get_content_type() == "multipart/report":
        return True
    sender = parseaddr(str(message.get("From", "")))[1].lower()
    if sender.split("@")[0] in _DAEMONS:
        return True
    if str(message.get("Return-Path", "")).strip() == "<>":
        return bool(_BOUNCE_SUBJECT.search(str(message.get("Subject", ""))))
    return bool(_BOUNCE_SUBJECT.search(str(message.get("Subject", "")))) and _automatic(message)


def _automatic(message: EmailMessage) -> bool:
    """RFC 3834 auto-replies and list traffic must never get an answer or act as a command."""
    submitted = str(message.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(message.get("Precedence", "")).strip().lower()
    return (
        submitted not in ("", "no")
        or precedence in ("bulk", "junk", "list", "auto_reply")
        or any(h in message for h in ("X-Autoreply", "X-Autorespond", "List-Id"))
    )


def _recipients(message: EmailMessage, envelope: Iterable[str]) -> list[str]:
    fields = [
        str(v)
        for h in ("To", "Cc", "Delivered-To", "X-Original-To")
        for v in message.get_all(h, [])
    ]
    return [addr for _, addr in getaddresses(fields) if addr] + [e.strip() for e in envelope]


def _command(message: EmailMessage) -> str:
    """The command word: the subject, else the first line of the text body."""
    subject = _REPLY_PREFIX.sub("", str(message.get("Subject", ""))).strip().lower()
    words = subject.split()
    if len(words) == 1:
        return words[0].strip(".!")
    body = message.get_body(preferencelist=("plain",))
    if body is None:
        return ""
    try:
        text = body.get_content()
    except (LookupError, ValueError):
        return ""
    for line in str(text).splitlines():
        line = line.strip()
        if line and not line.startswith(">"):
            first = line.split()
            return first[0].lower().strip(".!") if len(first) <= 2 else ""
    return ""
