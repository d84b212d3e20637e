"""The course manifest (templates/course.toml): lessons in order, with subject and source."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mailer import keys
from mailer.errors import CourseError, NotFound

MANIFEST = "course.toml"


def default_course_dir() -> Path:
    """The shipped course: inside the installed package, or templates/ in a checkout."""
    package = Path(__file__).resolve().parents[1]  # mailer/
    packaged = package / "_course"
    if (packaged / MANIFEST).is_file():
        return packaged
    return package.parent / "templates"


@dataclass(frozen=True)
class Lesson:
    """One week of the course."""

    number: int
    key: str
    title: str
    subject: str
    preheader: str
    source: str
    reminder: str | None = None  # source of the mid-week nudge, if the lesson has one
    reminder_subject: str | None = None
    reminder_preheader: str | None = None

    @property
    def reminder_key(self) -> str:
        """The ledger key of this lesson's reminder."""
        return keys.reminder(self.number)


@dataclass(frozen=True)
class Notice:
    """A message outside the weekly lessons (confirmation, welcome), keyed by its name."""

    key: str
    title: str
    subject: str
    preheader: str
    source: str
    footer: str


# Sent to the address alone after a reader erased themselves: it has no ledger row.
ERASED = "erased"
# The notices every course must provide: the double opt-in flow and erasure send them.
REQUIRED_NOTICES = (keys.CONFIRM, keys.WELCOME, ERASED)
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*\Z")


@dataclass(frozen=True)
class Signature:
    """Who signs every letter: the real person or team behind the course, and one line."""

    name: str
    line: str = ""


@dataclass(frozen=True)
class Course:
    """The whole course as the manifest describes it."""

    directory: Path
    title: str
    tagline: str
    name_fallback: str
    layout_html: str
    layout_text: str
    stylesheet: str
    lessons: tuple[Lesson, ...]
    notices: dict[str, Notice]
    reminders: bool = False
    reminder_after_days: int = 3
    signature: Signature = Signature("")
    language: str = "en"
    direction: str = "ltr"

    @property
    def total(self) -> int:
        """How many lessons the course has."""
        return len(self.lessons)

    def lesson(self, week: int) -> Lesson:
        """Lesson number `week` (1-based), or NotFound."""
        if not 1 <= week <= self.total:
            raise NotFound(f"no lesson {week}: the course has lessons 1 to {self.total}")
        return self.lessons[week - 1]

    def notice(self, key: str) -> Notice:
        """The notice named `key` (e.g. 'confirm'), or NotFound."""
        try:
            return self.notices[key]
        except KeyError:
            raise NotFound(f"the course has no message {key!r}") from None


def load_course(directory: Path | None = None) -> Course:
    """Read and check the manifest in `directory` (default: the shipped course)."""
    directory = directory or default_course_dir()
    path = directory / MANIFEST
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise CourseError(f"no course manifest at {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CourseError(f"cannot read {path}: {exc}") from None
    meta = data.get("course", {})
    raw_lessons = data.get("lessons", [])
    if not isinstance(meta, dict) or not isinstance(raw_lessons, list) or not raw_lessons:
        raise CourseError(f"{path}: needs a [course] table and at least one [[lessons]] entry")
    lessons = tuple(_lesson(path, i, item) for i, item in enumerate(raw_lessons, start=1))
    raw_notices = data.get("messages", {})
    if not isinstance(raw_notices, dict):
        raise CourseError(f"{path}: [messages] must hold one table per message")
    notices = {key: _notice(path, key, item) for key, item in raw_notices.items()}
    for key in REQUIRED_NOTICES:
        if key not in notices:
            raise CourseError(f"{path}: needs a [messages.{key}] table (subject, source, ...)")
    course = Course(
        directory=directory,
        title=_field(path, "course", meta, "title"),
        tagline=_field(path, "course", meta, "tagline"),
        name_fallback=_field(path, "course", meta, "name_fallback"),
        layout_html=_field(path, "course", meta, "layout_html"),
        layout_text=_field(path, "course", meta, "layout_text"),
        stylesheet=_field(path, "course", meta, "stylesheet"),
        lessons=lessons,
        notices=notices,
        reminders=_flag(path, meta, "reminders"),
        reminder_after_days=_days(path, meta),
        signature=_signature(path, data.get("signature"), f"The {meta.get('title')} team"),
        language=_choice(path, meta, "language", "en", _LANGUAGE.match),
        direction=_choice(path, meta, "direction", "ltr", ("ltr", "rtl").__contains__),
    )
    for name in (course.layout_html, course.layout_text, course.stylesheet):
        _must_exist(path, directory, name)
    sources = [lesson.source for lesson in lessons] + [n.source for n in notices.values()]
    sources += [lesson.reminder for lesson in lessons if lesson.reminder]
    for source in sources:
        _must_exist(path, directory, source)
    return course


def _field(path: Path, where: str, table: dict[str, object], name: str) -> str:
    value = table.get(name)
    if not isinstance(value, str) or not value.strip():
        raise CourseError(f"{path}: {where} needs a non-empty text field {name!r}")
    if re.search(r"[\r\n\x00]", value):
        raise CourseError(f"{path}: {where} field {name!r} must be on one line")
    return value.strip()


def _lesson(path: Path, number: int, item: object) -> Lesson:
    if not isinstance(item, dict):
        raise CourseError(f"{path}: lesson {number} must be a [[lessons]] table")
    where = f"lesson {number}"
    key = _field(path, where, item, "key")
    if key != keys.lesson(number):
        raise CourseError(
            f"{path}: {where} has key {key!r}; lessons are keyed lesson-1, lesson-2, ..."
        )
    reminder = _field(path, where, item, "reminder") if "reminder" in item else None
    return Lesson(
        number=number,
        key=key,
        title=_field(path, where, item, "title"),
        subject=_field(path, where, item, "subject"),
        preheader=_field(path, where, item, "preheader"),
        source=_field(path, where, item, "source"),
        reminder=reminder,
        reminder_subject=_field(path, where, item, "reminder_subject") if reminder else None,
        reminder_preheader=_field(path, where, item, "reminder_preheader") if reminder else None,
    )


def _signature(path: Path, table: object, default: str) -> Signature:
    """The [signature] table (name, line); without one, the course's team signs."""
    if table is None:
        return Signature(default)
    if not isinstance(table, dict):
        raise CourseError(f"{path}: [signature] must be a table with a name and a line")
    line = _field(path, "[signature]", table, "line") if "line" in table else ""
    return Signature(_field(path, "[signature]", table, "name"), line)


def _choice(
    path: Path, table: dict[str, object], name: str, default: str, valid: Callable[[str], object]
) -> str:
    value = table.get(name, default)
    if not isinstance(value, str) or not valid(value):
        raise CourseError(f"{path}: [course] {name} {value!r} is not valid (default {default!r})")
    return value


def _flag(path: Path, table: dict[str, object], name: str) -> bool:
    value = table.get(name, False)
    if not isinstance(value, bool):
        raise CourseError(f"{path}: [course] {name} must be true or false")
    return value


def _days(path: Path, table: dict[str, object]) -> int:
    value = table.get("reminder_after_days", 3)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 6:
        raise CourseError(f"{path}: [course] reminder_after_days must be a whole number 1-6")
    return value


def _notice(path: Path, key: str, item: object) -> Notice:
    where = f"[messages.{key}]"
    if not isinstance(item, dict):
        raise CourseError(f"{path}: {where} must be a table")
    return Notice(
        key=key,
        title=_field(path, where, item, "title"),
        subject=_field(path, where, item, "subject"),
        preheader=_field(path, where, item, "preheader"),
        source=_field(path, where, item, "source"),
        footer=_field(path, where, item, "footer"),
    )


def _must_exist(manifest: Path, directory: Path, name: str) -> None:
    if not (directory / name).is_file():
        raise CourseError(f"{manifest}: {name!r} does not exist in {directory}")
