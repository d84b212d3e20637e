"""Signed tokens (itsdangerous) for links in mail, and Message-IDs derived from the ledger key."""

from __future__ import annotations

import hashlib
import hmac

from itsdangerous import BadSignature, URLSafeSerializer

UNSUBSCRIBE_SALT = "rekindle.unsubscribe"


class Tokens:
    """Everything signed with the installation's secret key."""

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()
        self._unsubscribe = URLSafeSerializer(secret, salt=UNSUBSCRIBE_SALT)

    def unsubscribe(self, subscriber_id: int) -> str:
        """A token for the unsubscribe link; it does not expire (old mail must keep working)."""
        return str(self._unsubscribe.dumps(subscriber_id))

    def read_unsubscribe(self, token: str) -> int | None:
        """The subscriber id in a genuine unsubscribe token, or None for a forged one."""
        try:
            value = self._unsubscribe.loads(token)
        except BadSignature:
            return None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def message_id(self, subscriber_id: int, key: str, domain: str) -> str:
        """The Message-ID of (subscriber, key): the same on every retry, unguessable to others."""
        digest = hmac.new(self._secret, f"{subscriber_id}/{key}".encode(), hashlib.sha256)
        return f"<{key}.{digest.hexdigest()[:24]}@{domain}>"
