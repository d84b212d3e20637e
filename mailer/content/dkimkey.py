"""DKIM keys (README, "Getting into the inbox"): load, generate, and the DNS record to publish.

A key is a PEM file, RSA of at least 2048 bits (RFC 8301) or Ed25519 (RFC 8463),
readable by its owner only. Signing goes through `cryptography` (OpenSSL): the
pure-Python RSA in dkimpy costs milliseconds per message.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mailer.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    from mailer.config import Settings

KINDS = ("ed25519", "rsa")
MIN_RSA_BITS = 2048
TXT_STRING = 255  # the longest character-string in a TXT record
_SELECTOR = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def check_selector(selector: str) -> str:
    """`selector` if it is a DNS name (RFC 6376 §3.1), else a ConfigError."""
    if not _SELECTOR.match(selector or ""):
        raise ConfigError(
            f"DKIM selector {selector!r} must be a DNS name like 'rekindle' "
            "(letters, digits and '-', parts joined by '.')"
        )
    return selector


@dataclass(frozen=True)
class DkimKey:
    """One private key with the selector and domain it signs for."""

    selector: str
    domain: str
    kind: str  # "rsa" or "ed25519"
    private: RSAPrivateKey | Ed25519PrivateKey

    @property
    def algorithm(self) -> str:
        """The a= tag of its signatures."""
        return "rsa-sha256" if self.kind == "rsa" else "ed25519-sha256"

    @property
    def public_b64(self) -> str:
        """The p= tag: SubjectPublicKeyInfo for RSA, the raw 32 bytes for Ed25519."""
        from cryptography.hazmat.primitives import serialization

        public = self.private.public_key()
        if self.kind == "rsa":
            data = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        else:
            data = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(data).decode("ascii")

    @property
    def dns_name(self) -> str:
        """Where the public key is published."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def txt_record(self) -> str:
        """The TXT record's text (RFC 6376 §3.6.1)."""
        return f"v=DKIM1; k={self.kind}; p={self.public_b64}"

    @property
    def zone_record(self) -> str:
        """The TXT record as a zone-file line: its text in quoted strings of at most 255
        characters each (RFC 1035 §3.3.14), which DNS joins back into one."""
        key = f"p={self.public_b64}"
        strings = [f"v=DKIM1; k={self.kind}; "] + [
            key[i : i + TXT_STRING] for i in range(0, len(key), TXT_STRING)
        ]
        quoted = " ".join(f'"{s}"' for s in strings)
        return f"{self.dns_name}. IN TXT ( {quoted} )"

    def sign(self, signed: bytes) -> bytes:
        """The b= value for the canonical header bytes `signed`."""
        return self.sign_digest(hashlib.sha256(signed).digest())

    def sign_digest(self, digest: bytes) -> bytes:
        """The b= value for the SHA-256 `digest` of the canonical header bytes: RSA-SHA256
        (PKCS#1 v1.5) over the prehashed digest, or Ed25519 over the digest itself
        (RFC 8463 §3)."""
        if self.kind == "rsa":
            return self.private.sign(digest, *_rsa_sha256())  # type: ignore[call-arg]
        return self.private.sign(digest)  # type: ignore[call-arg]


@functools.cache
def _rsa_sha256() -> tuple[AsymmetricPadding, Prehashed]:
    """The padding and prehashed algorithm of rsa-sha256, made once."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    return padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())


def load(path: Path, selector: str, domain: str) -> DkimKey:
    """The key in PEM file `path`, or a one-line ConfigError saying what is wrong with it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    name = str(path)
    try:
        if path.stat().st_mode & 0o044:
            raise ConfigError(
                f"dkim_key_file {name!r} can be read by other users on this machine: "
                f"chmod 600 {name}"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read dkim_key_file {name!r}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"dkim_key_file {name!r} is not an unencrypted PEM private key ({exc})"
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(
                f"dkim_key_file {name!r} is RSA-{key.key_size}: receivers ignore RSA keys "
                f"under {MIN_RSA_BITS} bits (RFC 8301); make one with 'rekindle-mail dkim keygen'"
            )
        return DkimKey(check_selector(selector), domain.lower(), "rsa", key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return DkimKey(check_selector(selector), domain.lower(), "ed25519", key)
    raise ConfigError(f"dkim_key_file {name!r} must hold an RSA or Ed25519 key")


def generate(kind: str, bits: int = MIN_RSA_BITS) -> bytes:
    """A new private key of `kind` as unencrypted PKCS#8 PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if kind not in KINDS:
        raise ConfigError(f"key type {kind!r} must be one of {', '.join(KINDS)}")
    key: RSAPrivateKey | Ed25519PrivateKey
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=max(bits, MIN_RSA_BITS))
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def configured(settings: Settings) -> tuple[DkimKey, ...]:
    """The keys `settings` sign with (none when `dkim_key_file` is not set)."""
    return tuple(
        load(path, selector, settings.signing_domain)
        for path, selector in zip(settings.dkim_key_files, settings.dkim_selectors, strict=True)
    )


def keygen(kind: str, selector: str, domain: str, out: Path) -> DkimKey:
    """Make a key of `kind`, write it to the new file `out` (0600; an existing file is
    never overwritten) and return it, ready to tell what to publish."""
    from mailer.files import write_new_private

    check_selector(selector)
    pem = generate(kind)
    try:
        write_new_private(out, pem)
    except FileExistsError:
        raise ConfigError(f"{str(out)!r} already exists: choose another --out") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None
    return load(out, selector, domain)
