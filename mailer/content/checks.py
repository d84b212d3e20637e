"""Course validation and sample rendering, for `course check` and `preview`."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mailer import keys
from mailer.config import Settings
from mailer.content.compose import NEXT_MORNING, first_name
from mailer.content.course import ERASED
from mailer.content.message import MessageBuilder, Sender
from mailer.content.render import Recipient, Rendered, Renderer
from mailer.errors import CourseError

SAMPLE_NAME = "Alex Morgan"
SAMPLE_EMAIL = "alex@example.org"
WORDS = (250, 450)


def sample(renderer: Renderer, settings: Settings, week: int) -> tuple[str, str]:
    """(text, html) of lesson `week` as a sample subscriber would get it."""
    return sample_message(renderer, settings, renderer.course.lesson(week).key)


def _recipient(renderer: Renderer, settings: Settings) -> Recipient:
    return Recipient(
        first_name(SAMPLE_NAME, renderer.course.name_fallback),
        SAMPLE_EMAIL,
        f"{settings.base_url}/unsubscribe/sample",
        f"{settings.base_url}/confirm/sample",
        f"{settings.base_url}/letters/sample",
        NEXT_MORNING,
        f"{settings.base_url}/course/sample",
    )


def sample_message(renderer: Renderer, settings: Settings, key: str) -> tuple[str, str]:
    """(text, html) of any message `key` as a sample subscriber would get it."""
    return renderer.message(key).personalise(_recipient(renderer, settings))


@dataclass
class CourseCheck:
    """Word counts per lesson and notes worth a writer's attention."""

    words: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_course(renderer: Renderer, settings: Settings) -> CourseCheck:
    """Render and assemble every lesson and notice; raise CourseError on anything broken."""
    result = CourseCheck()
    course = renderer.course
    for lesson in course.lessons:
        content = _check_message(renderer, settings, lesson.key, f"lesson {lesson.number}")
        result.words.append(content.words)
        low, high = WORDS
        if not low <= content.words <= high:
            result.notes.append(
                f"lesson {lesson.number} has {content.words} words; "
                f"lessons should have {low}-{high}"
            )
    for key in course.notices:
        _check_message(renderer, settings, key, f"message {key!r}")
    confirm_text, confirm_html = sample_message(renderer, settings, keys.CONFIRM)
    if "/confirm/sample" not in confirm_text or "/confirm/sample" not in confirm_html:
        raise CourseError("message 'confirm' must show {{ confirm_url }} in both parts")
    return result


def _check_message(renderer: Renderer, settings: Settings, key: str, what: str) -> Rendered:
    content = renderer.message(key)
    recipient = _recipient(renderer, settings)
    text, html = content.personalise(recipient)
    message = MessageBuilder(Sender.from_settings(settings), key, content.subject, content).build(
        email=recipient.email,
        name=SAMPLE_NAME,
        first_name=recipient.first_name,
        message_id="<check@example>",
        unsubscribe_url=recipient.unsubscribe_url,
        confirm_url=recipient.confirm_url,
        date=datetime.now(UTC),
        letter_url=recipient.letter_url,
        first_letter=recipient.first_letter,
        course_url=recipient.course_url,
    )
    parsed = email.message_from_bytes(message.data, policy=email.policy.default)
    parts = [p.get_content_type() for p in parsed.iter_parts()]
    if parts != ["text/plain", "text/html"] or parsed.defects:
        raise CourseError(f"{what}: the assembled message is malformed")
    for part, body in (("text", text), ("HTML", html)):
        # The confirmation goes to someone who has not subscribed: it offers "ignore this
        # email" instead (README, "People joining and leaving on their own"); after an
        # erasure there is nobody left to unsubscribe.
        if key not in (keys.CONFIRM, ERASED) and "/unsubscribe/sample" not in body:
            raise CourseError(f"{what}: the {part} part has no unsubscribe link")
    return content
