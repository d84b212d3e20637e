"""The small web face: sign-up form, double opt-in, one-click unsubscribe, letters, privacy."""

from __future__ import annotations

import logging
import zoneinfo
from email.utils import parseaddr
from functools import cache
from pathlib import Path

import jinja2
from flask import Flask, Response, make_response, render_template, request
from werkzeug.exceptions import RequestEntityTooLarge

from mailer.app import letters, signup
from mailer.content.course import default_course_dir
from mailer.runtime import Runtime
from mailer.tokens import Tokens
from mailer.web.courier import Courier, SignUp
from mailer.web.guard import MAX_BODY, RateLimiter, cross_site
from subscribers.errors import InvalidInput
from subscribers.validation import MAX_ADDRESS, MAX_NAME, clean_name, normalize_email

log = logging.getLogger("rekindle.web")

SIGNUPS_PER_CLIENT = 5  # accepted sign-ups per client address per window
SIGNUP_WINDOW = 600.0  # seconds
HONEYPOT = "website"
ADDRESS_PROBLEM = "Please check your email address: we can’t send to it as it is written."
NAME_PROBLEM = (
    f"Please give just your first name, up to {MAX_NAME} characters, "
    "without line breaks or special characters."
)
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


def form_problem(form: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    """What is wrong with a sign-up form, in words for the person, and what may be shown again.

    A value is shown again only when it is short and printable: the page never
    echoes more than a person could have typed into the field.
    """
    email, name = form["email"], form["name"]
    shown = {"timezone": form["timezone"]}
    problems = []
    if len(email) <= MAX_ADDRESS and email.isprintable():
        shown["email"] = email
    try:
        normalize_email(email)
    except InvalidInput:
        problems.append(ADDRESS_PROBLEM)
    try:
        clean_name(name)
        shown["name"] = name
    except InvalidInput as exc:
        # The reason names the character (U+202E …), never the text that was typed.
        reason = str(exc).removeprefix("invalid name: ")
        detail = f" This one {reason.removeprefix('it ')}." if "(U+" in reason else ""
        problems.append(NAME_PROBLEM + detail)
    return (problems[0] if problems else None), shown


def courier_of(app: Flask) -> Courier:
    """The background worker of an app made by create_app."""
    courier = app.extensions["rekindle.courier"]
    assert isinstance(courier, Courier)
    return courier


def create_app(runtime: Runtime) -> Flask:
    """The Flask app for `runtime`'s settings and database (the app factory).

    Client addresses and the URL scheme are taken from the WSGI server, which
    `serve` configures from proxy_hops (mailer.webguard.server_options).
    """
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
    tokens: Tokens = composer.tokens
    courier = Courier(runtime, composer)
    app.extensions["rekindle.courier"] = courier
    limiter = RateLimiter(SIGNUPS_PER_CLIENT, SIGNUP_WINDOW)
    page = {
        "course_title": course.title,
        "course_tagline": course.tagline,
        "lesson_titles": [lesson.title for lesson in course.lessons],
        "postal_address": settings.postal_address or "",
        "privacy_url": settings.privacy_url or "/privacy",
    }

    def render(name: str, status: int = 200, **context: object) -> tuple[str, int]:
        return render_template(name, **page, **context), status

    def form_page(
        form: dict[str, str], status: int = 200, error: str | None = None
    ) -> tuple[str, int]:
        zone = form.get("timezone") or settings.timezone
        context = {"zones": time_zones(), "default_zone": zone, "form": form, "error": error}
        return render("index.html", status, **context)

    @app.before_request
    def same_site_posts_only() -> tuple[str, int] | None:
        # Every form, present and future: a browser's post from another site changes nothing.
        headers = request.headers
        if cross_site(
            request.method,
            headers.get("Origin"),
            headers.get("Sec-Fetch-Site"),
            request.host_url,
            settings.base_url,
        ):
            log.info("refused a %s to %s from another site", request.method, request.endpoint)
            return render("forbidden.html", 403)
        return None

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: RequestEntityTooLarge) -> tuple[str, int]:
        return render("too_large.html", 413)

    @app.after_request
    def secure(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/")
    def index() -> tuple[str, int]:
        return form_page({})

    @app.post("/subscribe")
    def subscribe() -> tuple[str, int]:
        form = {k: request.form.get(k, "").strip() for k in ("email", "name", "timezone")}
        if request.form.get(HONEYPOT):
            return render("check_inbox.html")  # a bot: answer as usual, do nothing
        if form["timezone"] not in time_zones():
            form["timezone"] = ""
        zone = form["timezone"] or settings.timezone
        problem, shown = form_problem(form)
        if problem:  # refused before the rate limit: only real sign-ups count against a client
            return form_page(shown, 400, problem)
        if not limiter.allow(request.remote_addr or "-"):
            return render("limited.html", 429)
        # Stored and mailed after the answer: the same page, as fast, known address or not.
        courier.sign_up(SignUp(form["email"], form["name"] or None, zone, runtime.now()))
        return render("check_inbox.html")

    @app.get("/confirm/<token>")
    def confirm_page(token: str) -> tuple[str, int]:
        # Never confirms: mail scanners and link prefetchers follow GET links.
        with runtime.session() as session:
            result = signup.check_confirmation(session, tokens, token)
        if result.outcome == signup.Confirmation.INVALID:
            return render("invalid.html", 400, what="confirmation")
        if result.outcome == signup.Confirmation.ALREADY:
            return confirmed(result)
        return render("confirm.html", token=token)

    @app.post("/confirm/<token>")
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
        courier.submit(result.welcome)
        return confirmed(result)

    def confirmed(result: signup.ConfirmResult) -> tuple[str, int]:
        first = result.first_lesson_due
        when = first.astimezone(zoneinfo.ZoneInfo(result.timezone or "UTC")) if first else None
        already = result.outcome == signup.Confirmation.ALREADY
        return render("confirmed.html", already=already, first_lesson=when)

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

    @app.get("/letters/<token>")
    def letter(token: str) -> Response:
        # GET and HEAD only, and read only: a letter for the subscriber the token names.
        with runtime.session() as session:
            page = letters.letter_page(session, composer, token)
        if page.shown is letters.Shown.INVALID:
            response = make_response(render("invalid.html", 400, what="letter"))
        elif page.shown is letters.Shown.GONE:
            response = make_response(render("gone.html", 410))
        else:
            response = make_response(page.html, 200)
        response.headers["X-Robots-Tag"] = letters.NOINDEX
        return response

    @app.get("/privacy")
    def privacy() -> tuple[str, int]:
        contact = parseaddr(settings.reply_to or settings.from_address)[1]
        return render("privacy.html", contact=contact)

    @app.get("/healthz")
    def health() -> tuple[str, int]:
        return "ok\n", 200

    return app
