"""The sign-up form: which time zones a person may pick, and what is wrong with a post."""

from __future__ import annotations

import zoneinfo
from functools import cache

from subscribers.errors import InvalidInput
from subscribers.validation import MAX_ADDRESS, MAX_NAME, clean_name, normalize_email

HONEYPOT = "website"  # a hidden field only bots fill in
ADDRESS_PROBLEM = "Please check your email address: we can’t send to it as it is written."
NAME_PROBLEM = (
    f"Please give just your first name, up to {MAX_NAME} characters, "
    "without line breaks or special characters."
)


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
