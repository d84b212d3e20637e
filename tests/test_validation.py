"""Input checks: addresses agree with email-validator; names carry no invisible controls."""

from __future__ import annotations

import unicodedata

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given
from hypothesis import strategies as st

from subscribers.errors import InvalidInput
from subscribers.validation import clean_name, normalize_email

ATOM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-."
locals_ = st.text(alphabet=ATOM + '"@ \\(),:;<>[]é', min_size=0, max_size=70)
labels = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_é",
    min_size=0,
    max_size=70,
)
domains = st.lists(labels, min_size=1, max_size=5).map(".".join) | st.sampled_from(
    ["example.org", "EXAMPLE.org", "mail.example.test", "localhost", "[127.0.0.1]", "x.y.z.com"]
)


def library(address: str) -> str | None:
    try:
        return validate_email(address, check_deliverability=False, test_environment=True).normalized
    except EmailNotValidError:
        return None


def ours(address: str) -> str | None:
    try:
        return normalize_email(address)
    except InvalidInput:
        return None


@given(local=locals_, domain=domains)
@example(local="ada", domain="Example.ORG")
@example(local=" 0", domain="example.org")
@example(local="a" * 64, domain="example.org")
@example(local="a" * 65, domain="example.org")
@example(local="a..b", domain="example.org")
@example(local=".a", domain="example.org")
@example(local="a", domain="-bad-.example.org")
@example(local="a" * 64, domain=("b" * 60 + ".") * 3 + "org")
def test_plain_addresses_are_judged_and_normalised_exactly_as_email_validator_does(local, domain):
    """Same verdict and same normalised form, whether the fast path or the library answers.

    Surrounding whitespace (a pasted address, a padded CSV cell) is trimmed
    before either judges: the library sees the trimmed address.
    """
    address = f"{local}@{domain}"
    assert ours(address) == library(address.strip())


def test_a_bad_address_still_says_why():
    """The reason is the library's, about the address the person typed."""
    with pytest.raises(InvalidInput, match=r"invalid email address 'ada@-bad-\.example\.org'"):
        normalize_email("ada@-bad-.example.org")


# --- names ---------------------------------------------------------------------------------

JOINERS = {"\u200c", "\u200d"}  # ZWNJ, ZWJ: Persian, Indic scripts and emoji need them
REFUSED = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def forbidden(name: str) -> list[str]:
    """The characters of `name` a stored name must not contain (the oracle, per character)."""
    return [c for c in name if unicodedata.category(c) in REFUSED and c not in JOINERS]


@given(st.text(max_size=120))
@example("Ann\u202eLee")
@example("Ann\x85Lee")
@example("\u200bAnn")
@example("Ann\u2029")
@example("\ufeffAnn")
@example("Ann\ud800")
def test_a_stored_name_never_carries_a_control_or_format_character(text):
    """Any text is either refused, or stored trimmed with no Cc/Cf/Zl/Zp except ZWNJ and ZWJ."""
    try:
        name = clean_name(text)
    except InvalidInput as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith("invalid name")
        assert forbidden(text.strip()) or len(text.strip()) > 100
        return
    if name is None:
        assert not text.strip()
        return
    assert name == text.strip()
    assert forbidden(name) == []


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("Ann\x85Lee", "U+0085"),
        ("Ann\x9b31mLee", "U+009B"),
        ("Ann\u202eeeL", "U+202E"),
        ("Ann\u200bLee", "U+200B"),
        ("Ann\ufeffLee", "U+FEFF"),
        ("Ann\u2028Lee", "U+2028"),
        ("Ann\u2029Lee", "U+2029"),
        ("Ann\u2066Lee", "U+2066"),
        ("Ann\x1bLee", "U+001B"),
        ("Ann\tLee", "U+0009"),
    ],
)
def test_a_refused_name_is_one_line_naming_the_character_not_echoing_the_name(name, code):
    """The error says which character (U+XXXX) is wrong, on one line, without the name."""
    with pytest.raises(InvalidInput) as caught:
        clean_name(name)
    message = str(caught.value)
    assert code in message and "Ann" not in message and len(message.splitlines()) == 1


@pytest.mark.parametrize(
    "name",
    [
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian: می‌خواهم, with ZWNJ
        "\u0915\u094d\u200d\u0937",  # Devanagari conjunct with ZWJ
        "\U0001f469\u200d\U0001f469\u200d\U0001f467",  # family emoji: ZWJ sequence
        "Zoë Ünal-Çelik",
        "O'Brien-Łukasz 李",
    ],
)
def test_names_that_need_joiners_or_accents_are_kept_exactly(name):
    """ZWNJ, ZWJ and ordinary non-ASCII letters are part of names: stored unchanged."""
    assert clean_name(f"  {name} ") == name
