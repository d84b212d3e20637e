"""The small web face: sign-up form, double opt-in confirmation, one-click unsubscribe."""

from __future__ import annotations

import logging
import threading
import time
import zoneinfo
from collections import defaultdict, deque
from functools import cache
from pathlib import Path

import jinja2
from flask import Flask, Response, render_template, request
from werkzeug.middleware.proxy_fix import ProxyFix

from mailer import dispatch, signup
from mailer.course import default_course_dir
from mailer.errors import TransportUnavailable
from mailer.runtime import Runtime
from mailer.tokens import Tokens
from subscribers.errors import InvalidInput

log = logging.getLogger("rekindle.web")

SIGNUPS_PER_CLIENT = 5  # form posts per client address per window
SIGNUP_WINDOW = 600.0  # seconds
HONEYPOT = "website"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # links carry tokens: never leak them onwards
    "X-Frame-Options": "DENY",
}


class RateLimiter:
    """At most `limit` events per `window` seconds for each key (a sliding window)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Record an event for `key` and say whether it is within the limit."""
        now = time.monotonic()
        with self._lock:
            events = self._events[key]
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            if len(self._events) > 10_000:  # forget idle clients
                for idle in [k for k, v in self._events.items() if not v]:
                    del self._events[idle]
            return True


@cache
def time_zones() -> tuple[str, ...]:
    """The IANA zones a person may pick: Area/City names, sorted."""
    areas = (
        "Africa",
        "America",
        "Antarctica",
        "Asia",
        "Atlantic",
        "Australia",
        "Europe",
        "Indian",
        "Pacific",
    )
    return ("UTC", *sorted(z for z in zoneinfo.available_timezones() if z.split("/")[0] in areas))


def create_app(runtime: Runtime) -> Flask:
    """The Flask app for `runtime`'s settings and database (the app factory)."""
    settings = runtime.settings
    course = runtime.course
    app = Flask(__name__, static_folder=None)
    loaders = [jinja2.FileSystemLoader(Path(course.directory) / "web")]
    if course.directory != default_course_dir():
        loaders.append(jinja2.FileSystemLoader(default_course_dir() / "web"))
    app.jinja_loader = jinja2.ChoiceLoader(loaders)
    if settings.proxy_hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops
        )
    with runtime.session() as session:
        composer = runtime.composer(session)
    tokens: Tokens = composer.tokens
    limiter = RateLimiter(SIGNUPS_PER_CLIENT, SIGNUP_WINDOW)
    page = {
        "course_title": course.title,
        "course_tagline": course.tagline,
        "lesson_titles": [lesson.title for lesson in course.lessons],
        "postal_address": settings.postal_address or "",
    }

    def render(name: str, status: int = 200, **context: object) -> tuple[str, int]:
        return render_template(name, **page, **context), status

    def send_now(delivery_id: int | None) -> None:
        """Deliver a confirmation or welcome at once; if the relay is down, `send` retries."""
        if delivery_id is None:
            return
        try:
            with runtime.session() as session, runtime.transport() as transport:
                dispatch.deliver_now(session, transport, composer, delivery_id, runtime.now())
        except TransportUnavailable as exc:
            log.warning("queued for the next send run: %s", exc)

    @app.after_request
    def secure(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/")
    def index() -> tuple[str, int]:
        return render("index.html", zones=time_zones(), default_zone=settings.timezone, form={})

    @app.post("/subscribe")
    def subscribe() -> tuple[str, int]:
        form = {k: request.form.get(k, "").strip() for k in ("email", "name", "timezone")}
        if request.form.get(HONEYPOT):
            return render("check_inbox.html")  # a bot: answer as usual, do nothing
        if not limiter.allow(request.remote_addr or "-"):
            return render("limited.html", 429)
        zone = form["timezone"] if form["timezone"] in time_zones() else settings.timezone
        try:
            with runtime.session() as session:
                result = signup.request_subscription(
                    session,
                    form["email"],
                    name=form["name"] or None,
                    timezone=zone,
                    now=runtime.now(),
                    source="web",
                    message_id=composer.message_id,
                )
        except InvalidInput as exc:
            error = str(exc).split(":")[0] if "address" in str(exc) else str(exc)
            context = {"zones": time_zones(), "default_zone": zone, "form": form, "error": error}
            return render("index.html", 400, **context)
        send_now(result.confirmation)
        return render("check_inbox.html")

    @app.get("/confirm/<token>")
    def confirm(token: str) -> tuple[str, int]:
        with runtime.session() as session:
            result = signup.confirm_subscription(
                session,
                tokens,
                token,
                now=runtime.now(),
                window=settings.send_window,
                message_id=composer.message_id,
            )
        if result.outcome == signup.Confirmation.INVALID:
            return render("invalid.html", 400, what="confirmation")
        send_now(result.welcome)
        first = result.first_lesson_due
        when = first.astimezone(zoneinfo.ZoneInfo(result.timezone or "UTC")) if first else None
        return render("confirmed.html", already=result.outcome == "already", first_lesson=when)

    @app.get("/unsubscribe/<token>")
    def unsubscribe_page(token: str) -> tuple[str, int]:
        # Never unsubscribes: mail scanners and link prefetchers follow GET links.
        with runtime.session() as session:
            if tokens.read_unsubscribe(token) is None:
                return render("invalid.html", 400, what="unsubscribe")
            sub = signup.subscriber_for_link(session, tokens, token)
            gone = sub is None or sub.status == "unsubscribed"
        return render("unsubscribe.html", token=token, gone=gone)

    @app.post("/unsubscribe/<token>")
    def unsubscribe(token: str) -> tuple[str, int]:
        # Both the page's button and RFC 8058 one-click (List-Unsubscribe=One-Click) land here.
        with runtime.session() as session:
            outcome = signup.unsubscribe_by_link(session, tokens, token, runtime.now())
        if outcome == signup.Unsubscribe.INVALID:
            return render("invalid.html", 400, what="unsubscribe")
        return render("unsubscribed.html")

    @app.get("/healthz")
    def health() -> tuple[str, int]:
        return "ok\n", 200

    return app
