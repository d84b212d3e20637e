"""Sample letters for the operator (`test-send`): sent now, outside the schedule and the ledger."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from mailer import keys
from mailer.app.enrolment import find_subscriber
from mailer.errors import Conflict, NotFound, RekindleError, TransportUnavailable
from mailer.transport.base import DeliveryError, TemporaryFailure
from subscribers.models import Status
from subscribers.validation import clean_name

if TYPE_CHECKING:
    from mailer.content.compose import Composer
    from mailer.content.course import Course
    from mailer.transport.base import Transport


def sample_keys(course: Course, week: int | None) -> list[str]:
    """Lesson `week`, or (None) the whole course in the order a subscriber gets it: the
    confirmation, the welcome, then each lesson with its reminder."""
    if week is not None:
        return [course.lesson(week).key]
    found = [key for key in (keys.CONFIRM, keys.WELCOME) if key in course.notices]
    for lesson in course.lessons:
        found.append(lesson.key)
        if lesson.reminder:
            found.append(lesson.reminder_key)
    return found


def send_samples(
    session: Session,
    composer: Composer,
    open_transport: Callable[[], Transport],
    address: str,
    message_keys: list[str],
    now: datetime,
) -> str:
    """Send the messages `message_keys` to `address` over one connection, personalised for
    them if they are a subscriber; nothing is recorded. Returns where they went.

    Raises TransportUnavailable when the server defers them (exit 75), RekindleError
    when it refuses them.
    """
    try:
        found = find_subscriber(session, address)
    except NotFound:
        name = None
    else:
        if found.status == Status.COMPLAINED:
            raise Conflict(
                f"{found.email} complained (marked our mail as spam): test-send mails nobody "
                "who complained; use your own test inbox"
            )
        name = clean_name(found.name)
    messages = [
        composer.compose(key, subscriber_id=None, email=address, name=name, date=now)
        for key in message_keys
    ]
    transport = open_transport()
    try:
        with transport:
            for message in messages:
                transport.send(message)
    except TemporaryFailure as exc:
        raise TransportUnavailable(
            f"{transport.description} deferred the message: {exc.reply}"
        ) from None
    except DeliveryError as exc:
        raise RekindleError(f"{transport.description} refused the message: {exc.reply}") from None
    return transport.description
