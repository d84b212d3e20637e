"""Signed tokens (itsdangerous) for links in mail, VERP tokens, and Message-IDs.

Every token that proves something about a subscriber binds their address as
well as their id: on SQLite an erased subscriber's id may be given to the next
one, and a token of theirs must prove nothing about the newcomer.
"""

from __future__ import annotations

import base64
import hmac
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from itsdangerous import BadSignature, Signer, URLSafeSerializer, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, want_bytes
from itsdangerous.serializer import Serializer
from itsdangerous.signer import HMACAlgorithm

UNSUBSCRIBE_SALT = "rekindle.unsubscribe"
CONFIRM_SALT = "rekindle.confirm"
CONFIRM_MAX_AGE = timedelta(days=7)
VERP_SALT = b"rekindle.verp"
MESSAGE_ID_SALT = b"rekindle.message-id"
VERP_MAC_BYTES = 8  # 64 bits: a forger gets one guess per message we receive
LETTER_SALT = b"rekindle.letter"
LETTER_MAC_BYTES = 16
COURSE_SALT = b"rekindle.course"
ERASE_SALT = "rekindle.erase"
ERASE_MAX_AGE = timedelta(minutes=30)
_MESSAGE_ID = re.compile(r"<?\s*([a-z0-9/-]{1,80})\.([0-9a-f]{24})@([^>\s]{1,255})\s*>?\Z")


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


@dataclass(frozen=True)
class VerpClaim:
    """What a well-formed VERP token names; only `Tokens.is_verp_of` says it is genuine."""

    subscriber_id: int
    key: str
    mac: bytes = field(repr=False)


class Tokens:
    """Everything signed with the installation's secret key.

    Link tokens carry the subscriber id and a short keyed digest of their address,
    so a link never acts on a different person who later gets the same id; VERP
    tokens and Message-IDs bind the address into their HMAC for the same reason.
    """

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()
        self._verp_key = hmac.digest(self._secret, VERP_SALT, "sha256")
        self._message_id_key = hmac.digest(self._secret, MESSAGE_ID_SALT, "sha256")
        self._letter_key = hmac.digest(self._secret, LETTER_SALT, "sha256")
        self._course_key = hmac.digest(self._secret, COURSE_SALT, "sha256")
        self._erase = URLSafeTimedSerializer(secret, salt=ERASE_SALT)
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

    def message_id(self, subscriber_id: int, key: str, domain: str, email: str) -> str:
        """The Message-ID of (subscriber, key) sent to `email`: the same on every retry,
        unguessable to others.

        `<key.hex24@domain>`, hex24 a truncated HMAC of the id, the key and the address
        (case-insensitive), so it proves nothing about someone who later gets the same id.
        """
        return f"<{key}.{self._message_id_mac(subscriber_id, key, email)}@{domain}>"

    def is_message_id_of(
        self, subscriber_id: int, email: str, message_id: str, domain: str
    ) -> bool:
        """True when `message_id` is one we made for this subscriber and address at `domain`."""
        found = _MESSAGE_ID.match(message_id.strip().lower())
        if found is None or found.group(3) != domain.lower():
            return False
        expected = self._message_id_mac(subscriber_id, found.group(1), email)
        return hmac.compare_digest(expected, found.group(2))

    def verp(self, subscriber_id: int, key: str, email: str) -> str:
        """The VERP token of (subscriber, key) sent to `email`: short, case-insensitive, signed.

        base32 of the subscriber id (4 bytes), the key and a truncated HMAC of both
        and the address, so an MTA that folds the case of the local part cannot spoil
        it, and it proves nothing about someone who later gets the same id.
        """
        payload = subscriber_id.to_bytes(4, "big") + key.encode()
        mac = self._verp_mac(payload, email)
        return base64.b32encode(payload + mac).decode("ascii").rstrip("=").lower()

    def read_verp(self, token: str) -> VerpClaim | None:
        """What a well-formed VERP token claims (subscriber id, key), NOT yet verified.

        Check it with `is_verp_of` against that subscriber's address before believing it.
        """
        if not 20 <= len(token) <= 120 or not token.isascii() or not token.isalnum():
            return None
        try:
            raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
        except ValueError:
            return None
        payload, mac = raw[:-VERP_MAC_BYTES], raw[-VERP_MAC_BYTES:]
        if len(payload) < 5 or base64.b32encode(raw).decode().rstrip("=") != token.upper():
            # only the canonical spelling counts (spare bits in the last character are zero)
            return None
        try:
            key = payload[4:].decode("ascii")
        except UnicodeDecodeError:
            return None
        return VerpClaim(int.from_bytes(payload[:4], "big"), key, mac)

    def is_verp_of(self, claim: VerpClaim, email: str) -> bool:
        """True when `claim` came from the VERP token we made for its subscriber at `email`."""
        payload = claim.subscriber_id.to_bytes(4, "big") + claim.key.encode()
        return hmac.compare_digest(claim.mac, self._verp_mac(payload, email))

    def letter(self, subscriber_id: int, email: str, key: str) -> str:
        """The letters-page token of (subscriber, key): one HMAC, which also binds the address.

        URL-safe base64 of the subscriber id (4 bytes), the key and a truncated HMAC
        of both and the address, so a link never shows a letter to someone who later
        gets the same id (README, "Read in your browser").
        """
        payload = subscriber_id.to_bytes(4, "big") + key.encode()
        return _b64(payload + self._letter_mac(payload, email))

    def letter_claim(self, token: str) -> tuple[int, str] | None:
        """(subscriber id, key) that a well-formed letters-page token names, NOT yet verified.

        Check it with `is_letter` against that subscriber's address before showing anything.
        """
        if not 8 <= len(token) <= 120 or not token.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            return None
        payload = raw[:-LETTER_MAC_BYTES]
        if len(payload) < 5 or _b64(raw) != token:  # only the canonical spelling counts
            return None
        try:
            key = payload[4:].decode("ascii")
        except UnicodeDecodeError:
            return None
        return int.from_bytes(payload[:4], "big"), key

    def is_letter(self, token: str, subscriber_id: int, email: str) -> bool:
        """True when `token` is the letters-page token we made for this subscriber and address."""
        claim = self.letter_claim(token)
        if claim is None or claim[0] != subscriber_id:
            return False
        return hmac.compare_digest(token, self.letter(subscriber_id, email, claim[1]))

    def course(self, subscriber_id: int, email: str) -> str:
        """The course-page token of a subscriber: one HMAC over their id and address.

        URL-safe base64 of the id (4 bytes) and a truncated HMAC (its own salt) of the
        id and the address, so the link stops working once the subscriber is erased
        or their address changes (README, "The course page"). It does not expire.
        """
        payload = subscriber_id.to_bytes(4, "big")
        return _b64(payload + self._course_mac(payload, email))

    def course_claim(self, token: str) -> int | None:
        """The subscriber id a well-formed course-page token names, NOT yet verified.

        Check it with `is_course` against that subscriber's address before acting.
        """
        if len(token) != 27 or not token.isascii():  # 20 bytes, unpadded base64
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=")
        except ValueError:
            return None
        if len(raw) != 4 + LETTER_MAC_BYTES or _b64(raw) != token:  # canonical spelling only
            return None
        return int.from_bytes(raw[:4], "big")

    def is_course(self, token: str, subscriber_id: int, email: str) -> bool:
        """True when `token` is the course-page token we made for this subscriber and address."""
        if self.course_claim(token) != subscriber_id:
            return False
        return hmac.compare_digest(token, self.course(subscriber_id, email))

    def erase(self, subscriber_id: int, email: str) -> str:
        """The value the "erase me" confirmation form carries; it expires (ERASE_MAX_AGE)."""
        return str(self._erase.dumps([subscriber_id, self.email_digest(email)]))

    def is_erase(self, value: str, subscriber_id: int, email: str) -> bool:
        """True when `value` is a live erase confirmation for this subscriber and address."""
        try:
            found = self._erase.loads(value, max_age=int(ERASE_MAX_AGE.total_seconds()))
        except BadSignature:  # SignatureExpired is a BadSignature
            return False
        return _pair(found) == (subscriber_id, self.email_digest(email))

    def _message_id_mac(self, subscriber_id: int, key: str, email: str) -> str:
        message = f"{subscriber_id}/{key}".encode() + b"\0" + email.strip().lower().encode()
        return hmac.digest(self._message_id_key, message, "sha256").hex()[:24]

    def _verp_mac(self, payload: bytes, email: str) -> bytes:
        message = payload + b"\0" + email.strip().lower().encode()
        return hmac.digest(self._verp_key, message, "sha256")[:VERP_MAC_BYTES]

    def _course_mac(self, payload: bytes, email: str) -> bytes:
        message = payload + b"\0" + email.strip().lower().encode()
        return hmac.digest(self._course_key, message, "sha256")[:LETTER_MAC_BYTES]

    def _letter_mac(self, payload: bytes, email: str) -> bytes:
        message = payload + b"\0" + email.strip().lower().encode()
        return hmac.digest(self._letter_key, message, "sha256")[:LETTER_MAC_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


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
