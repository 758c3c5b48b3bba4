"""Sealed cookies: JSON sealed with XChaCha20-Poly1305 under SHA-256(cookie_secret), as the original server wrote them.

A value is base64url without padding of nonce (24 random bytes) || ciphertext
|| tag; the associated data names what the cookie is for, so a state cookie
never opens as a session. The plaintext carries its own expiry (`exp`, Unix
seconds), checked on opening.
"""

import base64
import binascii
import hashlib
import json
import os
import time

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt, crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
)
from nacl.exceptions import CryptoError

STATE_AAD = b"zeroserve.oidc.state.v1"
SESSION_AAD = b"zeroserve.oidc.session.v1"
MIN_SECRET_BYTES = 16
_NONCE_BYTES = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES


def b64url(data):
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    """The bytes of unpadded base64url text; ValueError when it is not base64url."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


class Sealer:
    """Seals and opens cookie payloads with the key derived from one cookie secret."""

    __slots__ = ("_key",)

    def __init__(self, cookie_secret):
        secret = cookie_secret.encode("utf-8") if isinstance(cookie_secret, str) else cookie_secret
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"cookie_secret has {len(secret)} bytes; give at least {MIN_SECRET_BYTES}")
        self._key = hashlib.sha256(secret).digest()

    def seal(self, aad, payload, lifetime, now=None):
        """The cookie value for `payload` (a dict, given an `exp` `lifetime` seconds from now)."""
        now = time.time() if now is None else now
        plaintext = json.dumps({**payload, "exp": int(now) + int(lifetime)}, separators=(",", ":")).encode()
        nonce = os.urandom(_NONCE_BYTES)
        return b64url(nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, self._key))

    def open(self, aad, value, now=None):
        """The payload sealed in `value` under `aad`, or None when it is malformed, tampered with or expired."""
        try:
            raw = b64url_decode(value)
        except ValueError:
            return None
        if len(raw) <= _NONCE_BYTES:
            return None
        try:
            plaintext = crypto_aead_xchacha20poly1305_ietf_decrypt(raw[_NONCE_BYTES:], aad, raw[:_NONCE_BYTES],
                                                                   self._key)
            payload = json.loads(plaintext)
        except (CryptoError, ValueError):
            return None
        now = time.time() if now is None else now
        expiry = payload.get("exp") if isinstance(payload, dict) else None
        if not isinstance(expiry, int) or expiry < now:
            return None
        return payload
