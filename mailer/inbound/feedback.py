"""Reading ARF feedback reports (RFC 5965): a reader pressed "this is spam" at their provider.

A report is `multipart/report; report-type=feedback-report` with a
`message/feedback-report` part (its fields: Feedback-Type, User-Agent,
Original-Mail-From, Original-Rcpt-To, ...) and the original message quoted as
`message/rfc822` or `text/rfc822-headers`. Some providers send it as
`multipart/mixed`, or spell the report type oddly; the part decides. Whom a
report concerns is decided by its proof alone (mailer.inbound.provenance;
README, "Complaints"), never by its From, which is the provider.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from email.utils import getaddresses

PART = "message/feedback-report"
NOT_SPAM = "not-spam"  # RFC 6430: the reader says a message is not spam; it changes nothing
MAX_PARTS = 50  # parts looked at for the feedback-report part
MAX_FIELD = 64  # characters of a field kept for the log
MAX_ADDRESSES = 20  # Original-Rcpt-To / Original-Mail-From values read
_COMMENT = re.compile(r"\([^()]*\)")  # an RFC 5322 comment, innermost first
_TOKEN = re.compile(r"[a-z0-9.-]*")
_PRINTABLE = re.compile(r"[^\x21-\x7e ]+")


@dataclass(frozen=True)
class FeedbackReport:
    """The machine-readable part of a feedback report, cleaned for use and for the log."""

    feedback_type: str  # lower case, or "" when the report gives none
    user_agent: str  # printable ASCII, or "" when absent
    recipients: tuple[str, ...] = ()  # Original-Rcpt-To (often redacted)
    senders: tuple[str, ...] = ()  # Original-Mail-From: our VERP envelope sender, if genuine

    @property
    def complaint(self) -> bool:
        """Every feedback type but not-spam is a complaint (abuse, fraud, virus, other, none)."""
        return self.feedback_type != NOT_SPAM

    def describe(self) -> str:
        """'an abuse report from Yahoo!-Mail-Feedback/2.0', for one log line."""
        kind = f"{self.feedback_type} report" if self.feedback_type else "feedback report"
        article = "an" if kind[0] in "aeiou" else "a"
        agent = f" from {self.user_agent}" if self.user_agent else ""
        return f"{article} {kind}{agent}"


def read(message: Message) -> FeedbackReport | None:
    """The feedback report `message` carries, or None when it is not one."""
    part = _report_part(message)
    declared = (
        message.get_content_type() == "multipart/report"
        and str(message.get_param("report-type", "")).strip().lower() == "feedback-report"
    )
    if part is None:
        # A report that says it is one but lost its report part (cut off): still a report.
        return FeedbackReport("", "") if declared else None
    fields = _fields(part)
    return FeedbackReport(
        feedback_type=_feedback_type(str(fields.get("Feedback-Type", ""))),
        user_agent=_PRINTABLE.sub("", str(fields.get("User-Agent", ""))).strip()[:MAX_FIELD],
        recipients=_addresses(fields, "Original-Rcpt-To"),
        senders=_addresses(fields, "Original-Mail-From"),
    )


def _feedback_type(value: str) -> str:
    """The Feedback-Type token, lower case: the field may carry comments and folding
    whitespace around it (CFWS, RFC 5965 §3.5), so `not-spam (reader said ok)` and
    `NOT-SPAM; x` are both not-spam. What follows the token is not part of it."""
    text = value.lower()
    for _ in range(MAX_FIELD):  # nested comments, innermost first
        text, found = _COMMENT.subn(" ", text)
        if not found:
            break
    match = _TOKEN.match(text.strip())
    return match.group(0)[:MAX_FIELD] if match else ""


def _report_part(message: Message) -> Message | None:
    """The message/feedback-report part among the report's own parts (not inside a quoted
    message, where a forwarded report would sit)."""
    for seen, part in enumerate(_own_parts(message)):
        if seen >= MAX_PARTS:
            return None
        if part.get_content_type() == PART:
            return part
    return None


def _own_parts(message: Message) -> Iterator[Message]:
    if not message.is_multipart() or message.get_content_maintype() != "multipart":
        return
    payload = message.get_payload()
    if not isinstance(payload, list):
        return
    for part in payload:
        if not isinstance(part, Message):
            continue
        yield part
        if part.get_content_maintype() == "multipart":
            yield from _own_parts(part)


def _fields(part: Message) -> Message:
    """The report's fields: the parser reads a message/* part as a header block; a part
    sent base64 or quoted-printable anyway is decoded and read here."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    raw = part.get_payload(decode=True)
    text = raw[:65536].decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    return HeaderParser(policy=compat32).parsestr(text, headersonly=True)


def _addresses(fields: Message, name: str) -> tuple[str, ...]:
    values = [str(v) for v in fields.get_all(name, [])[:MAX_ADDRESSES]]
    return tuple(a for _, a in getaddresses(values) if a)[:MAX_ADDRESSES]
