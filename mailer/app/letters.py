"""The letters page: a lesson as a web page for the subscriber it was sent to.

Every lesson and reminder links to `<base_url>/letters/<token>` (README, "Read in
your browser"). The token names (subscriber, lesson) and is signed together with
the subscriber's address; the page is that subscriber's HTML part, rendered by the
same renderer, and nobody else's. Reading it changes nothing.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from sqlalchemy.orm import Session

from mailer.content.compose import Composer, first_name, letter_of
from mailer.content.render import Recipient
from mailer.errors import NotFound
from subscribers.models import Subscriber

NOINDEX = "noindex, nofollow"
_HEAD = re.compile(r"<head[^>]*>", re.IGNORECASE)


class Shown(enum.Enum):
    """What the letters page shows for a token."""

    LETTER = "letter"
    INVALID = "invalid"  # not a token we made, or made for someone else
    GONE = "gone"  # the subscriber was erased, or the course has no such lesson any more


@dataclass(frozen=True)
class LetterPage:
    """The outcome, and the letter's HTML when there is one."""

    shown: Shown
    html: str = ""


def letter_page(session: Session, composer: Composer, token: str) -> LetterPage:
    """The letter `token` names, as its subscriber received it (read only)."""
    claim = composer.tokens.letter_claim(token)
    if claim is None:
        return LetterPage(Shown.INVALID)
    subscriber_id, key = claim
    sub = session.get(Subscriber, subscriber_id)
    if sub is None:
        return LetterPage(Shown.GONE)
    if not composer.tokens.is_letter(token, sub.id, sub.email) or letter_of(key) != key:
        return LetterPage(Shown.INVALID)
    try:
        content = composer.renderer.message(key)
    except NotFound:
        return LetterPage(Shown.GONE)
    course = composer.renderer.course
    recipient = Recipient(
        first_name=first_name(sub.name, course.name_fallback),
        email=sub.email,
        unsubscribe_url=composer.unsubscribe_url(sub.id, sub.email),
        letter_url=f"{composer.base_url}/letters/{token}",
        course_url=composer.course_url(sub.id, sub.email),
    )
    _, html = content.personalise(recipient)
    html = html.replace("\r\n", "\n")
    robots = f'<meta name="robots" content="{NOINDEX}">'
    return LetterPage(Shown.LETTER, _HEAD.sub(lambda m: f"{m.group(0)}\n{robots}", html, 1))
