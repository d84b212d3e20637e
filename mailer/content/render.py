"""Renders each lesson once (Jinja, Markdown, premailer) into slots filled per recipient."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

from mailer.content.course import Course, Lesson
from mailer.content.markup import markdown
from mailer.content.plaintext import render_text
from mailer.errors import CourseError, NotFound
from mailer.keys import Kind, MessageKey

# Per-recipient values; lessons and layouts write {{ first_name }} etc. and
# stage one leaves the marker {{first_name}} (no spaces, so lxml keeps it).
SLOTS = (
    "first_name",
    "email",
    "unsubscribe_url",
    "confirm_url",
    "letter_url",
    "first_letter",
    "course_url",
)
_SLOT = re.compile(r"\{\{(" + "|".join(SLOTS) + r")\}\}")
_MARKERS = {name: "{{" + name + "}}" for name in SLOTS}
BROADCAST_FOOTER = "You are receiving this because you subscribed to {course}."
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


@dataclass(frozen=True)
class Slots:
    """Text split once around its {{slot}} markers, so filling it is a join."""

    literals: tuple[str, ...]
    names: tuple[str, ...]

    @classmethod
    def compile(cls, text: str) -> Slots:
        """Split `text` at every slot marker."""
        parts = _SLOT.split(text)
        return cls(tuple(parts[0::2]), tuple(parts[1::2]))

    def fill(self, values: Mapping[str, str]) -> str:
        """The text with each marker replaced by its value (values are not re-scanned)."""
        out = [self.literals[0]]
        for name, literal in zip(self.names, self.literals[1:], strict=True):
            out.append(values[name])
            out.append(literal)
        return "".join(out)


@dataclass(frozen=True)
class Recipient:
    """What differs per recipient inside the message body."""

    first_name: str
    email: str
    unsubscribe_url: str
    confirm_url: str = ""
    letter_url: str = ""  # this letter (a reminder: its week's letter) on the web
    first_letter: str = ""  # the welcome: when lesson 1 arrives, in the reader's zone
    course_url: str = ""  # the reader's course page (README, "The course page")


@dataclass(frozen=True)
class Rendered:
    """A message rendered and inlined once; `personalise` gives one recipient's parts."""

    key: str
    subject: str
    text: Slots
    html: Slots
    words: int = field(compare=False)

    def uses(self, slot: str) -> bool:
        """True when either part has the per-recipient slot `slot` (so it must be computed)."""
        return slot in self.text.names or slot in self.html.names

    def personalise(self, recipient: Recipient) -> tuple[str, str]:
        """(text part, html part) for `recipient`, CRLF line endings, HTML values escaped."""
        raw, escaped = self.values(recipient)
        return self.text.fill(raw), self.html.fill(escaped)

    @staticmethod
    def values(recipient: Recipient) -> tuple[dict[str, str], dict[str, str]]:
        """The slot values for the text part and (HTML-escaped) for the HTML part."""
        raw = {name: _UNSAFE.sub(" ", getattr(recipient, name)) for name in SLOTS}
        escaped = {name: str(escape(value)) for name, value in raw.items()}
        return raw, escaped


class Renderer:
    """Renders course lessons and notices, each at most once per Renderer."""

    def __init__(
        self,
        course: Course,
        *,
        postal_address: str | None = None,
        help_url: str | None = None,
        base_url: str = "",
        sender_address: str = "",
        replies: bool = False,
    ) -> None:
        self.course = course
        self._extra = {
            "postal_address": postal_address or "",
            "help_url": help_url or "",
            "base_url": base_url,
            "sender_address": sender_address,
            "replies": replies,  # reply_to is set: someone reads what readers send back
        }
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(course.directory),
            autoescape=jinja2.select_autoescape(["html", "htm"]),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        # Course files are the operator's code; a broadcast body is text and renders in
        # the sandbox, with no templates to include (README, "Beyond the six lessons").
        self._sandbox = _StrictSandbox(
            loader=jinja2.DictLoader({}),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        self._markdown = markdown()
        self._cache: dict[str, Rendered] = {}

    @property
    def rendered(self) -> frozenset[str]:
        """The keys rendered so far."""
        return frozenset(self._cache)

    def lesson(self, week: int) -> Rendered:
        """Lesson `week` rendered (once per Renderer)."""
        lesson = self.course.lesson(week)
        if lesson.key not in self._cache:
            self._cache[lesson.key] = self._render_lesson(lesson)
        return self._cache[lesson.key]

    def notice(self, key: str) -> Rendered:
        """The notice `key` ('confirm', 'welcome', ...) rendered (once per Renderer)."""
        notice = self.course.notice(key)
        if key not in self._cache:
            self._cache[key] = self._render(
                notice.key,
                notice.subject,
                notice.source,
                title=notice.title,
                preheader=notice.preheader,
                footer=notice.footer,
                kind=notice.key,
            )
        return self._cache[key]

    def reminder(self, week: int) -> Rendered:
        """The mid-week reminder of lesson `week` (NotFound if it has none)."""
        lesson = self.course.lesson(week)
        if lesson.reminder is None or lesson.reminder_subject is None:
            raise NotFound(f"lesson {week} has no reminder")
        key = lesson.reminder_key
        if key not in self._cache:
            self._cache[key] = self._render(
                key,
                lesson.reminder_subject,
                lesson.reminder,
                title=lesson.title,
                preheader=lesson.reminder_preheader or lesson.reminder_subject,
                week=week,
                kind=Kind.REMINDER,
            )
        return self._cache[key]

    def broadcast(self, key: str, subject: str, body: str) -> Rendered:
        """A newsletter: Markdown `body` in the course layout (once per key)."""
        if key not in self._cache:
            self._cache[key] = self.draft(key, subject, body)
        return self._cache[key]

    def draft(self, key: str, subject: str, body: str) -> Rendered:
        """A newsletter rendered but not kept (a body checked before it is stored)."""
        return self._render(
            key,
            subject,
            None,
            source_text=body,
            title=subject,
            preheader="",
            footer=BROADCAST_FOOTER.format(course=self.course.title),
            kind=Kind.BROADCAST,
        )

    def message(self, key: str) -> Rendered:
        """Whatever `key` names: 'lesson-N', 'reminder-N', a notice, or a broadcast seen before."""
        found = MessageKey.read(key)
        if found is not None and found.kind == Kind.LESSON and found.week:
            return self.lesson(found.week)
        if found is not None and found.kind == Kind.REMINDER and found.week:
            return self.reminder(found.week)
        if found is not None and found.kind == Kind.BROADCAST and key in self._cache:
            return self._cache[key]
        return self.notice(key)

    def _render_lesson(self, lesson: Lesson) -> Rendered:
        return self._render(
            lesson.key,
            lesson.subject,
            lesson.source,
            title=lesson.title,
            preheader=lesson.preheader,
            week=lesson.number,
            kind=Kind.LESSON,
        )

    def _render(
        self,
        key: str,
        subject: str,
        source_name: str | None,
        *,
        source_text: str | None = None,
        title: str,
        preheader: str,
        week: int | None = None,
        footer: str = "",
        kind: str,
    ) -> Rendered:
        course = self.course
        context = {
            **_MARKERS,
            **self._extra,
            "course_title": course.title,
            "course_tagline": course.tagline,
            "week": week,
            "total": course.total,
            "title": title,
            "subject": subject,
            "preheader": preheader,
            "footer": footer,
            "kind": kind,  # lesson, reminder, broadcast, or the notice's key (confirm, welcome)
            "signature": course.signature,
            "language": course.language,
            "direction": course.direction,
            "reminders": course.reminders,
            "lesson_titles": [lesson.title for lesson in course.lessons],
        }
        if source_name is not None:
            source = self._template(source_name, context)
        else:
            source = self._from_string(source_text or "", context)
        tokens = self._markdown.parse(source)
        body_text = _unquote_markers(render_text(tokens).rstrip("\n"))
        rendered = self._markdown.renderer.render(tokens, self._markdown.options, {})
        # Markdown output and the stylesheet are trusted course content, not subscriber data.
        body_html = Markup(_unquote_markers(rendered))  # noqa: S704
        stylesheet = Markup(self._read(course.stylesheet))  # noqa: S704
        text = self._template(course.layout_text, {**context, "body": body_text})
        html = self._template(
            course.layout_html, {**context, "body": body_html, "stylesheet": stylesheet}
        )
        html = self._inline_css(html, course.layout_html)
        return Rendered(
            key=key,
            subject=subject,
            text=Slots.compile(_crlf(text)),
            html=Slots.compile(_crlf(html)),
            words=len(body_text.split()),
        )

    def _template(self, name: str, context: Mapping[str, object]) -> str:
        try:
            return self._env.get_template(name).render(context)
        except jinja2.TemplateSyntaxError as exc:
            raise CourseError(f"{exc.filename or name} line {exc.lineno}: {exc.message}") from None
        except jinja2.TemplateNotFound as exc:
            raise CourseError(f"{name}: template {exc.name!r} not found") from None
        except jinja2.TemplateError as exc:
            raise CourseError(f"{name}: {exc}") from None

    def _from_string(self, text: str, context: Mapping[str, object]) -> str:
        try:
            return self._sandbox.from_string(text).render(context)
        except jinja2.TemplateSyntaxError as exc:
            raise CourseError(f"the body, line {exc.lineno}: {exc.message}") from None
        except SecurityError as exc:
            raise CourseError(
                f"the body is refused: {exc} (broadcasts render in a sandbox)"
            ) from None
        except jinja2.TemplateNotFound as exc:
            raise CourseError(f"the body cannot include other templates ({exc.name})") from None
        except jinja2.TemplateError as exc:
            raise CourseError(f"the body: {exc}") from None

    def _read(self, name: str) -> str:
        try:
            return (self.course.directory / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CourseError(f"cannot read {name}: {exc}") from None

    @staticmethod
    def _inline_css(html: str, name: str) -> str:
        from premailer import Premailer  # heavy (lxml, cssutils): only when rendering

        try:
            inlined = Premailer(
                html,
                allow_network=False,
                disable_validation=True,
                cssutils_logging_level=logging.CRITICAL,
                keep_style_tags=False,
                strip_important=False,
            ).transform()
        except Exception as exc:  # premailer raises bare lxml / cssutils errors
            raise CourseError(f"{name}: cannot inline its CSS: {exc}") from None
        if not inlined.lstrip().lower().startswith("<!doctype"):
            inlined = "<!DOCTYPE html>\n" + inlined
        return inlined


class _StrictSandbox(SandboxedEnvironment):
    """Jinja's sandbox, refusing an unsafe attribute the moment it is touched.

    The stock sandbox hands back an undefined value that fails only when shown,
    so `{% set x = lipsum.__globals__ %}` would pass unnoticed.
    """

    def unsafe_undefined(self, obj: object, attribute: str) -> jinja2.Undefined:
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )


def _unquote_markers(text: str) -> str:
    """Markdown percent-encodes a {{slot}} used as a link target; put the marker back."""
    for marker in _MARKERS.values():
        text = text.replace(marker.replace("{", "%7B").replace("}", "%7D"), marker)
    return text


def _crlf(text: str) -> str:
    return "\r\n".join(text.replace("\r\n", "\n").split("\n"))
