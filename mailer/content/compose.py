"""Composes a subscriber's lesson message from the run-wide renderer, tokens and sender."""

from __future__ import annotations

from datetime import datetime
from email.utils import make_msgid
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from mailer import keys
from mailer.content.message import MessageBuilder, Outgoing, Sender
from mailer.content.render import Renderer
from mailer.tokens import Tokens

if TYPE_CHECKING:
    from mailer.content.dkim import Signer

# A confirmation carries no unconfirmed name (README, "People joining and leaving on
# their own"): whoever typed the address may not be its owner, so it greets "Hi there"
# and its To header is the bare address. Names are used once the person confirms.
UNCONFIRMED_GREETING = "there"
# The welcome says when lesson 1 comes, in the reader's own zone; a test send, which has
# no schedule, says this instead.
NEXT_MORNING = "your next morning, in your own time zone"


def first_letter(due: datetime | None, zone: str) -> str:
    """When lesson 1 arrives, in the reader's zone: 'Tuesday 3 March at 09:00 (Asia/Tokyo time)'."""
    if due is None:
        return NEXT_MORNING
    local = due.astimezone(ZoneInfo(zone))
    return f"{local:%A} {local.day} {local:%B at %H:%M} ({zone.replace('_', ' ')} time)"


def letter_of(key: str) -> str | None:
    """The letter whose web page a message links to: a lesson itself, a reminder its week's."""
    found = keys.MessageKey.read(key)
    if found is None or found.round is not None or found.week is None:
        return None
    return keys.lesson(found.week)


def first_name(name: str | None, fallback: str) -> str:
    """The first word of the subscriber's name, or the course's friendly fallback."""
    words = (name or "").split()
    return words[0] if words else fallback


class Composer:
    """Builds messages; everything but the per-recipient parts is done once per run."""

    def __init__(
        self,
        renderer: Renderer,
        tokens: Tokens,
        sender: Sender,
        base_url: str,
        signer: Signer | None = None,
    ) -> None:
        self.renderer = renderer
        self.tokens = tokens
        self.sender = sender
        self.base_url = base_url.rstrip("/")
        self.signer = signer  # DKIM: every message this composer builds is signed
        self._builders: dict[str, MessageBuilder] = {}

    def builder(self, key: str) -> MessageBuilder:
        """The message builder for `key` ('lesson-3', 'confirm'), rendered on first use."""
        if key not in self._builders:
            content = self.renderer.message(key)
            self._builders[key] = MessageBuilder(
                self.sender, key, content.subject, content, self.signer
            )
        return self._builders[key]

    def message_id(self, subscriber_id: int, email: str, key: str, course_round: int = 1) -> str:
        """The ledger Message-ID of (subscriber, key) sent to `email`; a course taken again
        gets new ones."""
        tag = keys.in_round(key, course_round)
        return self.tokens.message_id(subscriber_id, tag, self.sender.domain, email)

    def unsubscribe_url(self, subscriber_id: int, email: str) -> str:
        """The one-click unsubscribe link for a subscriber."""
        return f"{self.base_url}/unsubscribe/{self.tokens.unsubscribe(subscriber_id, email)}"

    def confirm_url(self, subscriber_id: int, email: str) -> str:
        """The double opt-in link for a pending subscriber."""
        return f"{self.base_url}/confirm/{self.tokens.confirm(subscriber_id, email)}"

    def letter_url(self, subscriber_id: int, email: str, key: str) -> str:
        """Letter `key` as a web page for this subscriber (README, "Read in your browser")."""
        return f"{self.base_url}/letters/{self.tokens.letter(subscriber_id, email, key)}"

    def course_url(self, subscriber_id: int, email: str) -> str:
        """The reader's course page (README, "The course page"): one HMAC per recipient."""
        return f"{self.base_url}/course/{self.tokens.course(subscriber_id, email)}"

    def compose(
        self,
        key: str,
        *,
        subscriber_id: int | None,
        email: str,
        name: str | None,
        date: datetime,
        message_id: str | None = None,
        first_lesson_due: datetime | None = None,
        timezone: str = "UTC",
    ) -> Outgoing:
        """Message `key` for one recipient; without a subscriber id it is a test message.

        A welcome says when lesson 1 is due (`first_lesson_due`, shown in `timezone`).
        """
        builder = self.builder(key)
        greeting = first_name(name, self.renderer.course.name_fallback)
        if key == keys.CONFIRM:
            name, greeting = None, UNCONFIRMED_GREETING
        if subscriber_id is None:
            message_id = message_id or make_msgid("test", domain=self.sender.domain)
            subscriber_id = 0
            envelope = self.sender.envelope(None)
        else:
            message_id = message_id or self.message_id(subscriber_id, email, key)
            envelope = self.sender.envelope(self.tokens.verp(subscriber_id, key, email))
        letter = letter_of(key)
        managed = builder.content.uses("course_url")
        return builder.build(
            email=email,
            name=name,
            first_name=greeting,
            message_id=message_id,
            unsubscribe_url=self.unsubscribe_url(subscriber_id, email),
            confirm_url=self.confirm_url(subscriber_id, email) if key == keys.CONFIRM else "",
            date=date,
            envelope_sender=envelope,
            letter_url=self.letter_url(subscriber_id, email, letter) if letter else "",
            first_letter=first_letter(first_lesson_due, timezone) if key == keys.WELCOME else "",
            course_url=self.course_url(subscriber_id, email) if managed else "",
        )

    def lesson(
        self,
        week: int,
        *,
        subscriber_id: int | None,
        email: str,
        name: str | None,
        date: datetime,
        message_id: str | None = None,
    ) -> Outgoing:
        """Lesson `week` for one recipient; without a subscriber id it is a test message."""
        return self.compose(
            self.renderer.course.lesson(week).key,
            subscriber_id=subscriber_id,
            email=email,
            name=name,
            date=date,
            message_id=message_id,
        )
