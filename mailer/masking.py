"""Passwords inside URL settings: found in every form the settings take, and masked for display.

`smtp_url` may be one URL, several separated by commas or spaces, or a TOML
array; `database_url` is one URL (PostgreSQL's may list hosts with commas).
A password belongs percent-encoded in a URL, but people paste them as they
are: a password holding `@`, `/`, `?` or `,` must still be found and masked.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

MASK = "***"
_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
# Where one URL of a list ends: at white space, or at a comma right before the next URL.
_BOUNDARY = re.compile(r"(\s+|,(?=" + _SCHEME + r"))")
# user:password@ as written: everything from the scheme to the token's last '@'.
_LOOSE_USERINFO = re.compile(r"(" + _SCHEME + r")([^@]*:.*)@")
# What looks like userinfo but is host:port/path (an '@' further on, in a path or query).
_HOST_PORT = re.compile(r"[^:/@]*:\d*(?:[/?#].*)?", re.DOTALL)


def urls(value: object) -> list[str]:
    """The URLs of a setting: list items, or a string split where one URL ends."""
    items = [str(v) for v in value] if isinstance(value, list | tuple) else [str(value or "")]
    found: list[str] = []
    for item in items:
        parts = _BOUNDARY.split(item)[0::2]  # the separators are at odd places
        found.extend(part.strip(", ") for part in parts if part.strip(", "))
    return found


def url_passwords(value: object) -> set[str]:
    """Every password in a URL setting (any form), as written and percent-decoded."""
    found: set[str] = set()
    for url in urls(value):
        password = _loose_password(url)
        try:
            parsed = urlsplit(url).password
        except ValueError:
            parsed = None
        for candidate in (password, parsed):
            if candidate:
                found.update({candidate, unquote(candidate)})
    return found


def mask_url(text: str) -> str:
    """`text` (one URL, or several as smtp_url may list) with every password shown as ***."""
    parts = _BOUNDARY.split(text)
    return "".join(part if i % 2 else _mask_one(part) for i, part in enumerate(parts))


def _loose_password(url: str) -> str | None:
    """The password as written between 'user:' and the last '@' (None when there is none)."""
    match = _LOOSE_USERINFO.match(url.rstrip(","))
    if match is None or _HOST_PORT.fullmatch(match.group(2)):
        return None
    return match.group(2).partition(":")[2] or None


def _mask_one(url: str) -> str:
    """One URL with its password (if any) shown as ***."""
    password = _loose_password(url)
    if password is None:
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
    if not password:
        return url
    return url.replace(f":{password}@", f":{MASK}@", 1)
