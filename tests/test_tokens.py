"""Link tokens: the fast signer gives itsdangerous' own tokens, so old links keep working."""

from __future__ import annotations

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
