"""Stateless cookies for the HelloVerifyRequest exchange (RFC 6347 s4.2.1).

cookie = HMAC(secret, client address, client random): a server answers a ClientHello
without a valid cookie from these values alone, so spoofed ClientHellos cost it nothing.
The secret rotates; cookies made under the previous secret stay valid for one period.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

COOKIE_LEN = 16


class CookieJar:
    def __init__(self, rotate_after: float = 300.0) -> None:
        self._rotate_after = rotate_after
        self._secrets = [os.urandom(32)]
        self._rotated_at = time.monotonic()

    def _maybe_rotate(self) -> None:
        now = time.monotonic()
        if now - self._rotated_at >= self._rotate_after:
            self._secrets = [os.urandom(32), self._secrets[0]]
            self._rotated_at = now

    @staticmethod
    def _compute(secret: bytes, peer: tuple, client_random: bytes) -> bytes:
        message = f"{peer[0]}|{peer[1]}|".encode() + client_random
        return hmac.new(secret, message, hashlib.sha256).digest()[:COOKIE_LEN]

    def make(self, peer: tuple, client_random: bytes) -> bytes:
        self._maybe_rotate()
        return self._compute(self._secrets[0], peer, client_random)

    def verify(self, peer: tuple, client_random: bytes, cookie: bytes) -> bool:
        self._maybe_rotate()
        return any(
            hmac.compare_digest(cookie, self._compute(secret, peer, client_random))
            for secret in self._secrets
        )
