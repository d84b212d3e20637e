"""The web face (front-end): the app factory wires settings, pages, guards and the courier.

`serve` runs it on waitress behind the operator's reverse proxy (README, "People
joining and leaving on their own"); its pages are the blueprints in
mailer.web.pages and mailer.web.course (the reader's course page).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from flask import Flask, Response

from mailer.content.compose import Composer
from mailer.content.course import default_course_dir
from mailer.runtime import Runtime
from mailer.web.courier import Courier
from mailer.web.guard import MAX_BODY, RateLimiter

SIGNUPS_PER_CLIENT = 5  # accepted sign-ups per client address per window
SIGNUP_WINDOW = 600.0  # seconds
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Links carry tokens: never leak them to other sites. (Not no-referrer: with it a
    # browser sends `Origin: null` with our own forms, and those are refused as cross-site.)
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Site:
    """What the pages work with, made once by create_app."""

    runtime: Runtime
    composer: Composer
    courier: Courier
    limiter: RateLimiter
    page: dict[str, Any]  # what every page template is given


def create_app(runtime: Runtime) -> Flask:
    """The Flask app for `runtime`'s settings and database (the app factory).

    Client addresses and the URL scheme are taken from the WSGI server, which
    `serve` configures from proxy_hops (mailer.web.guard.server_options).
    """
    from mailer.web.course import course as course_page
    from mailer.web.pages import pages

    settings = runtime.settings
    course = runtime.course
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    loaders = [jinja2.FileSystemLoader(Path(course.directory) / "web")]
    if course.directory != default_course_dir():
        loaders.append(jinja2.FileSystemLoader(default_course_dir() / "web"))
    app.jinja_loader = jinja2.ChoiceLoader(loaders)
    with runtime.session() as session:
        composer = runtime.composer(session)
    app.extensions["rekindle"] = Site(
        runtime,
        composer,
        Courier(runtime, composer),
        RateLimiter(SIGNUPS_PER_CLIENT, SIGNUP_WINDOW),
        {
            "course_title": course.title,
            "course_tagline": course.tagline,
            "lesson_titles": [lesson.title for lesson in course.lessons],
            "postal_address": settings.postal_address or "",
            "privacy_url": settings.privacy_url or "/privacy",
        },
    )
    app.register_blueprint(pages)
    app.register_blueprint(course_page)
    app.after_request(_secure)
    return app


def courier_of(app: Flask) -> Courier:
    """The background worker of an app made by create_app."""
    site = app.extensions["rekindle"]
    assert isinstance(site, Site)
    return site.courier


def _secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    response.headers.setdefault("Cache-Control", "no-store")
    return response
