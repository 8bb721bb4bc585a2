"""Stateless cookies for the HelloVerifyRequest exchange (RFC 6347 s4.2.1).

cookie = HMAC(period key, client address, client random): a server answers a ClientHello
without a valid cookie from these values alone, so spoofed ClientHellos cost it nothing.

The key rotates: time is cut into periods of `rotate_after` seconds and each period's key
is derived from one secret, so a cookie made in the previous period is still accepted and
older ones are not. Deriving the period keys (instead of drawing a fresh random key each
period) lets several processes with the same secret agree on them without talking: a
worker, or another host behind a balancer, accepts a cookie another one made
(estcoap.workers passes one secret to every worker through share_secret()).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable

COOKIE_LEN = 16
SECRET_LEN = 32

# The secret of the CookieJars made in this process without one of their own: set by
# share_secret() before the servers start (a worker process), else drawn at first use.
_process_secret: bytes | None = None


def share_secret(secret: bytes) -> None:
    """Every CookieJar made from now on in this process derives its keys from secret."""
    global _process_secret
    if len(secret) < 16:
        raise ValueError("a cookie secret needs at least 16 bytes")
    _process_secret = bytes(secret)


def process_secret() -> bytes:
    global _process_secret
    if _process_secret is None:
        _process_secret = os.urandom(SECRET_LEN)
    return _process_secret


class CookieJar:
    def __init__(
        self,
        rotate_after: float = 300.0,
        secret: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Wall-clock time, not monotonic: processes (and hosts) must cut the same periods.
        self._rotate_after = rotate_after
        self._secret = secret if secret is not None else process_secret()
        self._clock = clock
        # period -> HMAC keyed with that period's key, copied for each cookie: OpenSSL 3
        # makes a new HMAC context slowly (~5 us), a copy of a keyed one costs ~1 us.
        self._keys: dict[int, hmac.HMAC] = {}

    def _key(self, period: int) -> hmac.HMAC:
        keyed = self._keys.get(period)
        if keyed is None:
            if len(self._keys) > 4:  # only the current and previous periods are asked for
                self._keys.clear()
            key = hmac.new(self._secret, b"dtls cookie %d" % period, hashlib.sha256).digest()
            keyed = self._keys[period] = hmac.new(key, digestmod=hashlib.sha256)
        return keyed

    def _period(self) -> int:
        return int(self._clock() // self._rotate_after)

    @staticmethod
    def _compute(keyed: hmac.HMAC, peer: tuple, client_random: bytes) -> bytes:
        mac = keyed.copy()
        mac.update(f"{peer[0]}|{peer[1]}|".encode() + client_random)
        return mac.digest()[:COOKIE_LEN]

    def make(self, peer: tuple, client_random: bytes) -> bytes:
        return self._compute(self._key(self._period()), peer, client_random)

    def verify(self, peer: tuple, client_random: bytes, cookie: bytes) -> bool:
        now = self._period()
        return any(
            hmac.compare_digest(cookie, self._compute(self._key(period), peer, client_random))
            for period in (now, now - 1)
        )
