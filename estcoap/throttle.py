"""Limits on failed password attempts: a token bucket per source address and per user name.

Shared by the fronts that check passwords (the HTTPS front's Basic/Digest users, the
console's sign-in), which may not import each other.

Each attempt takes a token before any password work is done and a success gives it
back, so only failures spend tokens and a flood of wrong guesses is refused before it
costs a KDF run. An empty bucket refills at `refill_per_second`; until then the key is
locked out. Tables are LRU-bounded, so a peer that invents many keys only evicts the
coldest entries (which then start afresh) instead of growing memory.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("estcoap.https.auth")


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    locked: bool = False  # logged as locked out; reset when a token comes back


class FailureLimit:
    """A token bucket per key: `burst` failures at once, then one per 1/refill_per_second s."""

    def __init__(
        self,
        what: str,
        *,
        burst: int,
        refill_per_second: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or refill_per_second <= 0:
            raise ValueError(f"{what} limit needs burst >= 1 and a positive refill rate")
        self.what = what
        self.burst = burst
        self.refill_per_second = refill_per_second
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        # Counters a metrics exporter can read.
        self.failures = 0  # attempts that spent a token for good
        self.lockouts = 0  # keys that ran out of tokens
        self.refused = 0  # attempts refused while locked out

    def _bucket(self, key: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(
                float(self.burst), bucket.tokens + (now - bucket.stamp) * self.refill_per_second
            )
            bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.locked = False
        return bucket

    def wait(self, key: str) -> float:
        """Seconds until `key` may try again (0 when it may now)."""
        bucket = self._bucket(key)
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.refill_per_second

    def take(self, key: str) -> None:
        """Reserve a token for an attempt (call only after wait() said 0)."""
        self._bucket(key).tokens -= 1

    def give_back(self, key: str) -> None:
        bucket = self._bucket(key)
        bucket.tokens = min(float(self.burst), bucket.tokens + 1)

    def failed(self, key: str) -> None:
        """The attempt failed: its token stays spent; log once when that locks the key out."""
        self.failures += 1
        bucket = self._bucket(key)
        if bucket.tokens < 1 and not bucket.locked:
            bucket.locked = True
            self.lockouts += 1
            log.warning(
                "HTTP authentication: %s %s locked out after %d failed attempts; "
                "one more attempt every %.0f s",
                self.what,
                key,
                self.burst,
                1 / self.refill_per_second,
            )

    def refuse(self) -> None:
        self.refused += 1

    def __len__(self) -> int:
        return len(self._buckets)


def source_key(address: str | None) -> str:
    """The throttling key of a peer address: IPv6 by its /64 (one host owns a whole /64)."""
    if not address:
        return "?"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def user_key(name: str) -> str:
    """A user name as it may appear in a log line: printable and short."""
    return repr(name[:64])


@dataclass(frozen=True)
class AuthLimits:
    """Defaults: a source may fail 10 times at once, then once every 6 s (10 per minute);
    a user name 20 times, then once every 3 s, whatever the number of sources."""

    source_burst: int = 10
    source_per_second: float = 1 / 6
    user_burst: int = 20
    user_per_second: float = 1 / 3


def retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))
