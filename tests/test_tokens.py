"""Link tokens: the fast signer gives itsdangerous' own tokens, so old links keep working."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer

from mailer.tokens import UNSUBSCRIBE_SALT, Tokens

ids = st.integers(min_value=1, max_value=2**62)
emails = st.emails()
secrets = st.text(min_size=1, max_size=64)


@given(secret=secrets, subscriber_id=ids, email=emails)
def test_unsubscribe_tokens_are_byte_for_byte_itsdangerous_tokens(secret, subscriber_id, email):
    """Skipping zlib and deriving the key once changes nothing in the token (or its reading)."""
    tokens = Tokens(secret)
    stock = URLSafeSerializer(secret, salt=UNSUBSCRIBE_SALT)
    token = tokens.unsubscribe(subscriber_id, email)
    assert token == stock.dumps([subscriber_id, tokens.email_digest(email)])
    assert tokens.read_unsubscribe(token) == (subscriber_id, tokens.email_digest(email))


@given(subscriber_id=ids, email=emails)
def test_a_token_signed_with_another_secret_is_refused(subscriber_id, email):
    """The key cache is per secret: a token from another installation does not verify."""
    token = Tokens("one secret").unsubscribe(subscriber_id, email)
    assert Tokens("another secret").read_unsubscribe(token) is None
    assert Tokens("one secret").read_unsubscribe(token) is not None


course_ids = st.integers(min_value=1, max_value=2**32 - 1)


@given(subscriber_id=course_ids, email=emails, other=emails)
def test_course_tokens_bind_the_subscriber_and_their_address(subscriber_id, email, other):
    """A course-page token is 27 URL-safe characters that verify only for its subscriber id,
    their address (in any case) and this installation's secret."""
    tokens = Tokens("one secret")
    token = tokens.course(subscriber_id, email)
    assert len(token) == 27 and token.replace("-", "").replace("_", "").isalnum()
    assert tokens.course_claim(token) == subscriber_id
    assert tokens.is_course(token, subscriber_id, email.upper())
    assert not tokens.is_course(token, subscriber_id + 1, email)
    assert tokens.is_course(token, subscriber_id, other) == (other.lower() == email.lower())
    assert not Tokens("another secret").is_course(token, subscriber_id, email)
    assert token != tokens.letter(subscriber_id, email, "lesson-1")[: len(token)]


@given(text=st.text(max_size=200))
def test_reading_any_text_as_a_course_token_never_raises(text):
    """Whatever a link scanner or an attacker sends, it is a claim or None, never an error."""
    claim = Tokens("one secret").course_claim(text)
    assert claim is None or isinstance(claim, int)


message_keys = st.sampled_from(["lesson-1", "lesson-6/2", "reminder-3", "confirm", "welcome"])


@given(subscriber_id=course_ids, key=message_keys, email=emails, other=emails)
def test_verp_tokens_bind_the_subscriber_the_message_and_the_address(
    subscriber_id, key, email, other
):
    """A VERP token names (id, key) but verifies only for the address it was sent to (in any
    case): an erased subscriber's token proves nothing about a newcomer with their id."""
    tokens = Tokens("one secret")
    token = tokens.verp(subscriber_id, key, email)
    claim = tokens.read_verp(token)
    assert claim is not None and (claim.subscriber_id, claim.key) == (subscriber_id, key)
    assert tokens.is_verp_of(claim, email.upper())
    assert tokens.is_verp_of(claim, other) == (other.lower() == email.lower())
    assert not Tokens("another secret").is_verp_of(claim, email)


def test_a_verp_token_for_one_address_does_not_verify_for_another():
    """The same id and key, another address: nothing (SQLite gives an erased id again)."""
    tokens = Tokens("one secret")
    token = tokens.verp(2, "lesson-1", "a@example.net")
    assert token != tokens.verp(2, "lesson-1", "b@example.net")
    claim = tokens.read_verp(token)
    assert claim is not None and tokens.is_verp_of(claim, "A@Example.NET")
    assert not tokens.is_verp_of(claim, "b@example.net")


@given(subscriber_id=course_ids, key=message_keys, email=emails, other=emails)
def test_message_ids_bind_the_subscriber_the_message_and_the_address(
    subscriber_id, key, email, other
):
    """A Message-ID keeps its visible form `<key.hex24@domain>` and verifies only for its
    subscriber id, the address it went to (in any case), its domain and this secret."""
    tokens = Tokens("one secret")
    mid = tokens.message_id(subscriber_id, key, "example.org", email)
    assert re.fullmatch(rf"<{re.escape(key)}\.[0-9a-f]{{24}}@example\.org>", mid)
    assert tokens.is_message_id_of(subscriber_id, email.upper(), mid, "example.org")
    assert tokens.is_message_id_of(subscriber_id, email, mid.upper(), "EXAMPLE.org")
    same = other.lower() == email.lower()
    assert tokens.is_message_id_of(subscriber_id, other, mid, "example.org") == same
    assert not tokens.is_message_id_of(subscriber_id + 1, email, mid, "example.org")
    assert not tokens.is_message_id_of(subscriber_id, email, mid, "example.net")
    assert not Tokens("another secret").is_message_id_of(subscriber_id, email, mid, "example.org")


def test_a_message_id_for_one_address_does_not_verify_for_another():
    """The same id and key, another address: another Message-ID, and the old one proves
    nothing about the newcomer."""
    tokens = Tokens("one secret")
    mid = tokens.message_id(2, "lesson-1", "example.org", "a@example.net")
    assert mid != tokens.message_id(2, "lesson-1", "example.org", "b@example.net")
    assert tokens.is_message_id_of(2, "a@example.net", mid, "example.org")
    assert not tokens.is_message_id_of(2, "b@example.net", mid, "example.org")
