"""The course page, `/course/<token>`: where the reader stands, and a form for every control.

`GET` and `HEAD` only show it (link scanners change nothing); each change is a
same-site `POST` (mailer.web.pages refuses the others) that calls one service
of mailer.app.pace and answers with a redirect to the page, which confirms it
(README, "The course page").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime

from flask import (
    Blueprint,
    Response,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
)
from sqlalchemy.orm import Session

from mailer.app import coursepage, pace, privacy
from mailer.app.coursepage import Opened
from mailer.app.history import READER
from mailer.errors import InvalidInput
from mailer.timing import Windows
from mailer.web import Site
from mailer.web.forms import time_zones
from subscribers.models import Subscriber

log = logging.getLogger("rekindle.web")
course = Blueprint("course", __name__)
NOINDEX = "noindex, nofollow"
# What the page says after each change; the query only picks one of these.
DONE = {
    "week-off": "Done: your next letter comes a week later.",
    "pause": "Done: your course is paused. Nothing will arrive until you come back and resume.",
    "resume": "Welcome back: your course goes on.",
    "next-now": "Done: your next letter goes out with our next delivery.",
    "timezone": "Done: your letters now follow your new time zone.",
    "time-of-day": "Done: your letters now come at your new time of day.",
    "reminders-on": "Done: mid-week reminders are on.",
    "reminders-off": "Done: no more mid-week reminders.",
    "leave": "You have left the course. No more letters will come.",
}
Control = Callable[[Session, Subscriber, datetime], Subscriber]


def _site() -> Site:
    site = current_app.extensions["rekindle"]
    assert isinstance(site, Site)
    return site


def _page(name: str, status: int, **context: object) -> Response:
    response = make_response(render_template(name, **_site().page, **context), status)
    response.headers["X-Robots-Tag"] = NOINDEX
    return response


def _refused(opened: Opened) -> Response:
    if opened is Opened.GONE:
        return _page("gone.html", 410, what="course")
    return _page("invalid.html", 400, what="course")


def _show(token: str, status: int = 200, **context: object) -> Response:
    """The page of the reader `token` names, as it stands now."""
    site = _site()
    runtime = site.runtime
    windows = runtime.settings.windows
    with runtime.session() as session:
        opened, sub = coursepage.open_page(session, site.composer.tokens, token)
        if sub is None:
            return _refused(opened)
        standing = coursepage.standing(session, sub, runtime.course, windows, runtime.now())
    when = standing.next_at
    return _page(
        "course.html",
        status,
        token=token,
        s=standing,
        when=f"{when:%A} {when.day} {when:%B at %H:%M}" if when else "",
        windows=windows,
        zones=time_zones(),
        has_reminders=runtime.course.reminders,
        **context,
    )


@course.get("/course/<token>")
def page(token: str) -> Response:
    # GET and HEAD: read only.
    return _show(token, done=DONE.get(request.args.get("done", "")))


def _control(token: str, name: str, act: Control) -> Response:
    """Verify the token, run one control, and show the page again (303) confirming it."""
    site = _site()
    runtime = site.runtime
    with runtime.session() as session:
        opened, sub = coursepage.open_page(session, site.composer.tokens, token)
        if sub is None:
            return _refused(opened)
        try:
            act(session, sub, runtime.now())
        except pace.Refused as exc:
            session.rollback()
            return _show(token, 409, error=exc.reader)
        except InvalidInput as exc:
            session.rollback()
            log.info("course page: %s refused: %s", name, exc)
            return _show(token, 400, error="Please choose one of the options offered.")
    response = make_response(redirect(f"/course/{token}?done={name}", 303))
    response.headers["X-Robots-Tag"] = NOINDEX
    return response


def _windows() -> Windows:
    return _site().runtime.settings.windows


@course.post("/course/<token>/week-off")
def week_off(token: str) -> Response:
    return _control(token, "week-off", lambda db, sub, now: pace.week_off(db, sub, now, READER))


@course.post("/course/<token>/pause")
def pause(token: str) -> Response:
    return _control(token, "pause", lambda db, sub, now: pace.pause(db, sub, now, READER))


@course.post("/course/<token>/resume")
def resume(token: str) -> Response:
    return _control(
        token, "resume", lambda db, sub, now: pace.resume(db, sub, now, _windows(), READER)
    )


@course.post("/course/<token>/next-now")
def next_now(token: str) -> Response:
    return _control(token, "next-now", lambda db, sub, now: pace.next_now(db, sub, now, READER))


@course.post("/course/<token>/timezone")
def timezone(token: str) -> Response:
    zone = request.form.get("timezone", "")

    def act(db: Session, sub: Subscriber, now: datetime) -> Subscriber:
        if zone not in time_zones():  # only the zones the page offers
            raise InvalidInput(f"time zone {zone[:64]!r} is not offered")
        return pace.set_when(db, sub, now, _windows(), READER, zone=zone)

    return _control(token, "timezone", act)


@course.post("/course/<token>/time-of-day")
def time_of_day(token: str) -> Response:
    chosen = request.form.get("time_of_day", "")[:16] or "none"

    def act(db: Session, sub: Subscriber, now: datetime) -> Subscriber:
        return pace.set_when(db, sub, now, _windows(), READER, time_of_day=chosen)

    return _control(token, "time-of-day", act)


@course.post("/course/<token>/reminders")
def reminders(token: str) -> Response:
    switch = request.form.get("reminders", "")

    def act(db: Session, sub: Subscriber, now: datetime) -> Subscriber:
        if switch not in ("on", "off"):
            raise InvalidInput("reminders: on or off")
        return pace.set_reminders(db, sub, switch == "on", now, READER)

    return _control(token, f"reminders-{switch if switch in ('on', 'off') else 'on'}", act)


@course.post("/course/<token>/leave")
def leave(token: str) -> Response:
    return _control(token, "leave", lambda db, sub, now: pace.leave(db, sub, now, READER))


@course.post("/course/<token>/data")
def data(token: str) -> Response:
    # A POST, so that no link scanner or prefetcher ever fetches someone's data.
    site = _site()
    with site.runtime.session() as session:
        opened, sub = coursepage.open_page(session, site.composer.tokens, token)
        if sub is None:
            return _refused(opened)
        found = privacy.personal_data(session, sub, site.runtime.now())
    response = make_response(json.dumps(found, indent=2, ensure_ascii=False) + "\n", 200)
    response.mimetype = "application/json"
    response.headers["Content-Disposition"] = 'attachment; filename="rekindle-my-data.json"'
    response.headers["X-Robots-Tag"] = NOINDEX
    return response


@course.post("/course/<token>/erase")
def erase(token: str) -> Response:
    # The first press only asks: the second, confirming POST erases.
    site = _site()
    tokens = site.composer.tokens
    with site.runtime.session() as session:
        opened, sub = coursepage.open_page(session, tokens, token)
    if sub is None:
        return _refused(opened)
    return _page("erase.html", 200, token=token, confirm=tokens.erase(sub.id, sub.email))


@course.post("/course/<token>/erase/confirm")
def erase_confirmed(token: str) -> Response:
    site = _site()
    tokens = site.composer.tokens
    with site.runtime.session() as session:
        opened, sub = coursepage.open_page(session, tokens, token)
        if sub is None:
            return _refused(opened)
        if not tokens.is_erase(request.form.get("confirm", ""), sub.id, sub.email):
            return _page("invalid.html", 400, what="erase")
        erased = privacy.erase(session, sub)
    # None: another request erased them a moment before; no goodbye after a complaint.
    if erased is not None and erased.goodbye:
        site.courier.mail(privacy.farewell(site.composer, erased, site.runtime.now()))
    return _page("erased.html", 200)
