"""Checks on what people type: addresses, names and IANA time zones."""

from __future__ import annotations

import functools
import re
import unicodedata
import zoneinfo

from subscribers.errors import InvalidInput

MAX_NAME = 100
# Control characters (CR, LF, NUL, ...) would let a value break out of a header line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
# Characters a name may not carry (README, "People joining and leaving on their own"):
# controls (Cc: C0, DEL, C1 such as U+0085 NEL and U+009B CSI), invisible format
# characters (Cf: bidi overrides such as U+202E, U+200B, U+FEFF, ...), the line and
# paragraph separators, and lone surrogates (bytes that were not text).
_REFUSED = {"Cc": "a control character", "Cf": "an invisible formatting character"}
_REFUSED |= {"Zl": "a line separator", "Zp": "a paragraph separator", "Cs": "a lone surrogate"}
# Zero-width non-joiner and joiner are part of how Persian, Indic scripts and emoji are written.
_JOINERS = frozenset("\u200c\u200d")


# A plain ASCII dot-atom local part (RFC 5322 §3.2.3), which email-validator keeps as is.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
MAX_LOCAL = 64
MAX_ADDRESS = 254


def normalize_email(value: str) -> str:
    """Return the address in normalised form, or raise InvalidInput saying why."""
    raw = value.strip()
    if not raw:
        raise InvalidInput("email address is empty")
    if _CONTROL.search(raw):
        raise InvalidInput(f"invalid email address {raw!r}: it contains a control character")
    local, at, domain = raw.rpartition("@")
    if at and len(local) <= MAX_LOCAL and len(raw) <= MAX_ADDRESS and _PLAIN_LOCAL.fullmatch(local):
        # An import of 100,000 rows has a few dozen domains: email-validator judges
        # each domain once; a plain local part needs no more than the pattern above.
        normal = _domain(domain)
        if normal is not None:
            return f"{local}@{normal}"
    return _validate(raw)


@functools.lru_cache(maxsize=4096)
def _domain(domain: str) -> str | None:
    """The normalised domain, if an address with a plain local part there is valid."""
    try:
        return _validate("postmaster@" + domain).rpartition("@")[2]
    except InvalidInput:
        return None  # the full check says why, in terms of the real address


def _validate(raw: str) -> str:
    # Imported here: the time-zone check above is needed by every run, this library is not.
    from email_validator import EmailNotValidError, validate_email

    try:
        # test_environment admits the reserved *.test domain, used for trials and tests.
        info = validate_email(raw, check_deliverability=False, test_environment=True)
    except EmailNotValidError as exc:
        raise InvalidInput(f"invalid email address {raw!r}: {exc}") from None
    return info.normalized


def clean_name(value: str | None) -> str | None:
    """Return a trimmed display name (None when blank), or raise InvalidInput.

    The one check every way in (CLI, CSV import, web form, mail) goes through.
    The error names the offending character, never echoes the name itself.
    """
    if value is None:
        return None
    name = value.strip()
    if not name:
        return None
    if len(name) > MAX_NAME:
        raise InvalidInput(f"invalid name: longer than {MAX_NAME} characters")
    bad = _refused(name)
    if bad is not None:
        raise InvalidInput(f"invalid name: it contains {_describe(bad)}")
    return name


def _refused(name: str) -> str | None:
    """The first character of `name` that names may not carry, if any."""
    if name.isascii():
        found = _CONTROL.search(name)
        return found.group() if found else None
    for char in name:
        if char not in _JOINERS and unicodedata.category(char) in _REFUSED:
            return char
    return None


def _describe(char: str) -> str:
    """'a control character (U+202E RIGHT-TO-LEFT OVERRIDE)': what it is, and which."""
    code = f"U+{ord(char):04X}"
    label = unicodedata.name(char, "")
    return f"{_REFUSED[unicodedata.category(char)]} ({code}{' ' + label if label else ''})"


@functools.cache
def _zones_by_folded_name() -> dict[str, str]:
    return {key.casefold(): key for key in zoneinfo.available_timezones()}


def check_timezone(value: str) -> str:
    """Return the canonical IANA name for `value` (case-insensitive), or raise InvalidInput."""
    key = value.strip()
    if key.upper() == "UTC":
        return "UTC"
    canonical = _zones_by_folded_name().get(key.casefold())
    if canonical is None:
        raise InvalidInput(
            f"unknown time zone {value!r}: "
            "use an IANA name such as Europe/Berlin or America/New_York"
        )
    return canonical
