"""Course validation and sample rendering, for `course check` and `preview`."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mailer.compose import first_name
from mailer.config import Settings
from mailer.errors import CourseError
from mailer.message import MessageBuilder, Sender
from mailer.render import Recipient, Renderer

SAMPLE_NAME = "Alex Morgan"
SAMPLE_EMAIL = "alex@example.org"
WORDS = (250, 450)


def sample(renderer: Renderer, settings: Settings, week: int) -> tuple[str, str]:
    """(text, html) of lesson `week` as a sample subscriber would get it."""
    recipient = Recipient(
        first_name(SAMPLE_NAME, renderer.course.name_fallback),
        SAMPLE_EMAIL,
        f"{settings.base_url}/unsubscribe/sample",
    )
    return renderer.lesson(week).personalise(recipient)


@dataclass
class CourseCheck:
    """Word counts per lesson and notes worth a writer's attention."""

    words: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_course(renderer: Renderer, settings: Settings) -> CourseCheck:
    """Render and assemble every lesson; raise CourseError on anything broken."""
    result = CourseCheck()
    sender = Sender.from_settings(settings)
    for lesson in renderer.course.lessons:
        content = renderer.lesson(lesson.number)
        text, html = sample(renderer, settings, lesson.number)
        message = MessageBuilder(sender, lesson.key, lesson.subject, content).build(
            email=SAMPLE_EMAIL,
            name=SAMPLE_NAME,
            first_name="Alex",
            message_id="<check@example>",
            unsubscribe_url=f"{settings.base_url}/unsubscribe/sample",
            date=datetime.now(UTC),
        )
        parsed = email.message_from_bytes(message.data, policy=email.policy.default)
        parts = [p.get_content_type() for p in parsed.iter_parts()]
        if parts != ["text/plain", "text/html"] or parsed.defects:
            raise CourseError(f"lesson {lesson.number}: the assembled message is malformed")
        for part, body in (("text", text), ("HTML", html)):
            if "/unsubscribe/sample" not in body:
                raise CourseError(
                    f"lesson {lesson.number}: the {part} part has no unsubscribe link"
                )
        result.words.append(content.words)
        low, high = WORDS
        if not low <= content.words <= high:
            result.notes.append(
                f"lesson {lesson.number} has {content.words} words; "
                f"lessons should have {low}-{high}"
            )
    return result
