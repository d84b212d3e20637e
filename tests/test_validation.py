"""Address checks: the fast path for plain addresses agrees with email-validator everywhere."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given
from hypothesis import strategies as st

from subscribers.errors import InvalidInput
from subscribers.validation import normalize_email

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
