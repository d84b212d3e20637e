"""The web face's pages: sign-up, confirmation, unsubscribe, letters, privacy.

A `GET` never changes anything (mail scanners and link prefetchers follow
links); every change is a same-site `POST` (mailer.web.guard).
"""

from __future__ import annotations

import logging
import zoneinfo
from email.utils import parseaddr

from flask import Blueprint, Response, current_app, make_response, render_template, request
from werkzeug.exceptions import RequestEntityTooLarge

from mailer.app import letters, signup
from mailer.web import Site
from mailer.web.courier import SignUp
from mailer.web.forms import HONEYPOT, form_problem, time_zones
from mailer.web.guard import cross_site

log = logging.getLogger("rekindle.web")
pages = Blueprint("pages", __name__)


def _site() -> Site:
    site = current_app.extensions["rekindle"]
    assert isinstance(site, Site)
    return site


def render(name: str, status: int = 200, **context: object) -> tuple[str, int]:
    return render_template(name, **_site().page, **context), status


def form_page(form: dict[str, str], status: int = 200, error: str | None = None) -> tuple[str, int]:
    zone = form.get("timezone") or _site().runtime.settings.timezone
    context = {"zones": time_zones(), "default_zone": zone, "form": form, "error": error}
    return render("index.html", status, **context)


@pages.before_app_request
def same_site_posts_only() -> tuple[str, int] | None:
    # Every form, present and future: a browser's post from another site changes nothing.
    headers = request.headers
    if cross_site(
        request.method,
        headers.get("Origin"),
        headers.get("Sec-Fetch-Site"),
        request.host_url,
        _site().runtime.settings.base_url,
    ):
        log.info("refused a %s to %s from another site", request.method, request.endpoint)
        return render("forbidden.html", 403)
    return None


@pages.app_errorhandler(RequestEntityTooLarge)
def too_large(_: RequestEntityTooLarge) -> tuple[str, int]:
    return render("too_large.html", 413)


@pages.get("/")
def index() -> tuple[str, int]:
    return form_page({})


@pages.post("/subscribe")
def subscribe() -> tuple[str, int]:
    site = _site()
    form = {k: request.form.get(k, "").strip() for k in ("email", "name", "timezone")}
    if request.form.get(HONEYPOT):
        return render("check_inbox.html")  # a bot: answer as usual, do nothing
    if form["timezone"] not in time_zones():
        form["timezone"] = ""
    zone = form["timezone"] or site.runtime.settings.timezone
    problem, shown = form_problem(form)
    if problem:  # refused before the rate limit: only real sign-ups count against a client
        return form_page(shown, 400, problem)
    if not site.limiter.allow(request.remote_addr or "-"):
        return render("limited.html", 429)
    # Stored and mailed after the answer: the same page, as fast, known address or not.
    site.courier.sign_up(SignUp(form["email"], form["name"] or None, zone, site.runtime.now()))
    return render("check_inbox.html")


@pages.get("/confirm/<token>")
def confirm_page(token: str) -> tuple[str, int]:
    # Never confirms: mail scanners and link prefetchers follow GET links.
    site = _site()
    with site.runtime.session() as session:
        result = signup.check_confirmation(session, site.composer.tokens, token)
    if result.outcome == signup.Confirmation.INVALID:
        return render("invalid.html", 400, what="confirmation")
    if result.outcome == signup.Confirmation.ALREADY:
        return confirmed(result)
    return render("confirm.html", token=token)


@pages.post("/confirm/<token>")
def confirm(token: str) -> tuple[str, int]:
    site = _site()
    runtime = site.runtime
    with runtime.session() as session:
        result = signup.confirm_subscription(
            session,
            site.composer.tokens,
            token,
            now=runtime.now(),
            windows=runtime.settings.windows,
            message_id=site.composer.message_id,
        )
    if result.outcome == signup.Confirmation.INVALID:
        return render("invalid.html", 400, what="confirmation")
    site.courier.submit(result.welcome)
    return confirmed(result)


def confirmed(result: signup.ConfirmResult) -> tuple[str, int]:
    first = result.first_lesson_due
    when = first.astimezone(zoneinfo.ZoneInfo(result.timezone or "UTC")) if first else None
    already = result.outcome == signup.Confirmation.ALREADY
    return render("confirmed.html", already=already, first_lesson=when)


@pages.get("/unsubscribe/<token>")
def unsubscribe_page(token: str) -> tuple[str, int]:
    # Never unsubscribes: mail scanners and link prefetchers follow GET links.
    site = _site()
    tokens = site.composer.tokens
    with site.runtime.session() as session:
        if tokens.read_unsubscribe(token) is None:
            return render("invalid.html", 400, what="unsubscribe")
        sub = signup.subscriber_for_link(session, tokens, token)
        gone = sub is None or sub.status in signup.LEFT
    return render("unsubscribe.html", token=token, gone=gone)


@pages.post("/unsubscribe/<token>")
def unsubscribe(token: str) -> tuple[str, int]:
    # Both the page's button and RFC 8058 one-click (List-Unsubscribe=One-Click) land here.
    site = _site()
    with site.runtime.session() as session:
        outcome = signup.unsubscribe_by_link(
            session, site.composer.tokens, token, site.runtime.now()
        )
    if outcome == signup.Unsubscribe.INVALID:
        return render("invalid.html", 400, what="unsubscribe")
    return render("unsubscribed.html")


@pages.get("/letters/<token>")
def letter(token: str) -> Response:
    # GET and HEAD only, and read only: a letter for the subscriber the token names.
    site = _site()
    with site.runtime.session() as session:
        page = letters.letter_page(session, site.composer, token)
    if page.shown is letters.Shown.INVALID:
        response = make_response(render("invalid.html", 400, what="letter"))
    elif page.shown is letters.Shown.GONE:
        response = make_response(render("gone.html", 410))
    else:
        response = make_response(page.html, 200)
    response.headers["X-Robots-Tag"] = letters.NOINDEX
    return response


@pages.get("/privacy")
def privacy() -> tuple[str, int]:
    settings = _site().runtime.settings
    contact = parseaddr(settings.reply_to or settings.from_address)[1]
    return render("privacy.html", contact=contact)


@pages.get("/healthz")
def health() -> tuple[str, int]:
    return "ok\n", 200
