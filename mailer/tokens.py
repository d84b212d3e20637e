"""Signed tokens (itsdangerous) for links in mail, and Message-IDs derived from the ledger key."""

from __future__ import annotations

import hmac
from datetime import timedelta
from typing import Any

from itsdangerous import BadSignature, Signer, URLSafeSerializer, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, want_bytes
from itsdangerous.serializer import Serializer
from itsdangerous.signer import HMACAlgorithm

UNSUBSCRIBE_SALT = "rekindle.unsubscribe"
CONFIRM_SALT = "rekindle.confirm"
CONFIRM_MAX_AGE = timedelta(days=7)


_DERIVED: dict[tuple[bytes, bytes], bytes] = {}
_SHA1 = Signer.default_digest_method


class KeyOnceSigner(Signer):
    """itsdangerous' Signer, deriving its key once per (secret, salt) instead of per token.

    The tokens are byte for byte the same; a send run signs one link per message.
    """

    def get_signature(self, value: str | bytes) -> bytes:
        if type(self.algorithm) is not HMACAlgorithm or self.digest_method is not _SHA1:
            return super().get_signature(value)
        # hmac.digest() is the one-shot C HMAC: the same bytes as HMACAlgorithm's.
        return base64_encode(hmac.digest(self.derive_key(), want_bytes(value), "sha1"))

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        secret = want_bytes(self.secret_keys[-1] if secret_key is None else secret_key)
        cache_key = (secret, want_bytes(self.salt))
        key = _DERIVED.get(cache_key)
        if key is None:
            key = _DERIVED[cache_key] = super().derive_key(secret_key)
        return key


class ShortSerializer(URLSafeSerializer):
    """URLSafeSerializer without its zlib attempt, for payloads too short to ever shrink.

    itsdangerous compresses only when that makes the payload shorter, which
    never happens for [id, 12-character digest]; skipping the attempt gives the
    same tokens for a fraction of the cost (one link is signed per message).
    """

    def dump_payload(self, obj: Any) -> bytes:
        return base64_encode(Serializer.dump_payload(self, obj))


class Tokens:
    """Everything signed with the installation's secret key.

    Link tokens carry the subscriber id and a short keyed digest of their address,
    so a link never acts on a different person who later gets the same id.
    """

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()
        self._unsubscribe = ShortSerializer(secret, salt=UNSUBSCRIBE_SALT, signer=KeyOnceSigner)
        self._confirm = URLSafeTimedSerializer(secret, salt=CONFIRM_SALT)

    def email_digest(self, email: str) -> str:
        """A short keyed digest of an address (case-insensitive)."""
        return hmac.digest(self._secret, email.strip().lower().encode(), "sha256").hex()[:12]

    def unsubscribe(self, subscriber_id: int, email: str) -> str:
        """A token for the unsubscribe link; it does not expire (old mail must keep working)."""
        return str(self._unsubscribe.dumps([subscriber_id, self.email_digest(email)]))

    def read_unsubscribe(self, token: str) -> tuple[int, str] | None:
        """(subscriber id, address digest) from a genuine unsubscribe token, else None."""
        try:
            value = self._unsubscribe.loads(token)
        except BadSignature:
            return None
        return _pair(value)

    def confirm(self, subscriber_id: int, email: str) -> str:
        """A token for the double opt-in link; it expires after CONFIRM_MAX_AGE."""
        return str(self._confirm.dumps([subscriber_id, self.email_digest(email)]))

    def read_confirm(self, token: str) -> tuple[int, str] | None:
        """(subscriber id, address digest) from a genuine, unexpired confirm token, else None."""
        try:
            value = self._confirm.loads(token, max_age=int(CONFIRM_MAX_AGE.total_seconds()))
        except BadSignature:  # SignatureExpired is a BadSignature
            return None
        return _pair(value)

    def message_id(self, subscriber_id: int, key: str, domain: str) -> str:
        """The Message-ID of (subscriber, key): the same on every retry, unguessable to others."""
        digest = hmac.digest(self._secret, f"{subscriber_id}/{key}".encode(), "sha256")
        return f"<{key}.{digest.hex()[:24]}@{domain}>"


def _pair(value: object) -> tuple[int, str] | None:
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int)
        and not isinstance(value[0], bool)
        and isinstance(value[1], str)
    ):
        return value[0], value[1]
    return None
