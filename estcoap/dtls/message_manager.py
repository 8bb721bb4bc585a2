"""aiocoap's message layer, with duplicate detection that expires in batches.

RFC 7252 s4.5: a server remembers each request's Message ID (and its response, to answer
a retransmission the same way) for EXCHANGE_LIFETIME, 247 s by default. aiocoap arms one
timer per request for that. At a thousand requests a second, a quarter of a million
timers then sit in asyncio's heap, each push and pop compares TimerHandles in Python, and
a gateway's CPU per request climbs by about 15 % within a minute (uvloop's heap is in C).

Here the Message IDs that expire in the same second share one list, and one timer sweeps
the lists that are due. An entry lives up to a second longer than aiocoap would keep it,
never shorter. Duplicates are still answered by aiocoap's own code.

What is remembered is also bounded: every entry holds a response, about 3 KB, so a
client with a session and a fast loop could otherwise fill memory. Each session keeps
at most `per_remote_limit` entries, and past that loses its own oldest first, so one
busy client cannot push out the others'; `limit` bounds them all, oldest first. Either
way what goes is old: a client stops retransmitting 45 s after its first try (RFC 7252
s4.8.2), and the limits leave far more than that at any rate one client can sustain.

A session's entries go when the session does (forget_remote): the key is the session's
remote object, and a retransmission can only come over the session that carried the
original (a new handshake makes a new remote), so they could never match again. Without
this, a fleet that enrolls one request per session keeps every closed session and its
response for 247 s: a plateau of about 40 KiB per request (530 MiB at 50 a second),
which the allocator then keeps as its high-water mark.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Hashable
from itertools import islice

from aiocoap.messagemanager import MessageManager

DEFAULT_LIMIT = 100_000
DEFAULT_PER_REMOTE_LIMIT = 10_000

log = logging.getLogger(__name__)

_Key = tuple[Hashable, int]  # (remote, Message ID), as aiocoap keys its memory
_Batch = dict[_Key, None]  # the keys that expire in one second


class BatchedExpiryMessageManager(MessageManager):
    def __init__(
        self,
        token_manager: object,
        limit: int = DEFAULT_LIMIT,
        per_remote_limit: int = DEFAULT_PER_REMOTE_LIMIT,
    ) -> None:
        super().__init__(token_manager)
        if limit < 1 or per_remote_limit < 1:
            raise ValueError("the limits of remembered requests must be positive")
        self.limit = limit
        self.per_remote_limit = per_remote_limit
        # (expiry second, keys), in expiry order; one timer for the earliest. The keys
        # are a dict used as an ordered set, so one can be taken out in O(1).
        self._expiring: deque[tuple[float, _Batch]] = deque()
        # Each remote's keys in arrival order, which is also the order they expire in,
        # each with the batch that holds it.
        self._by_remote: dict[Hashable, deque[tuple[_Key, _Batch]]] = {}
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._warned_at = -math.inf

    def _deduplicate_message(self, message) -> bool:
        key = (message.remote, message.mid)
        if key in self._recent_messages:
            return super()._deduplicate_message(message)  # a duplicate: aiocoap answers it
        self._recent_messages[key] = None  # the response is stored here when sent
        batch = self._expire_later(key, message.transport_tuning.EXCHANGE_LIFETIME)
        own = self._by_remote.setdefault(message.remote, deque())
        own.append((key, batch))
        if len(own) > self.per_remote_limit:
            oldest, its_batch = own.popleft()
            self._recent_messages.pop(oldest, None)
            its_batch.pop(oldest, None)
            self._warn(f"a session sent more than {self.per_remote_limit} requests")
        if len(self._recent_messages) > self.limit:
            self._forget_oldest(len(self._recent_messages) - self.limit)
        return False

    def forget_remote(self, remote: Hashable) -> None:
        """Forget every request of a session that has ended (its remote is never seen
        again), with the responses kept for them."""
        for key, batch in self._by_remote.pop(remote, ()):
            self._recent_messages.pop(key, None)
            batch.pop(key, None)

    def _expire_later(self, key: _Key, lifetime: float) -> _Batch:
        second = math.ceil(self.loop.time() + lifetime)
        if self._expiring and self._expiring[-1][0] >= second:
            # The same second, or a longer lifetime seen earlier: join the last batch,
            # which expires no earlier than this key should.
            batch = self._expiring[-1][1]
        else:
            batch = {}
            self._expiring.append((second, batch))
        batch[key] = None
        if self._sweep_timer is None:
            self._sweep_timer = self.loop.call_at(self._expiring[0][0], self._sweep)
        return batch

    def _sweep(self) -> None:
        self._sweep_timer = None
        now = self.loop.time()
        while self._expiring and self._expiring[0][0] <= now:
            for key in self._expiring.popleft()[1]:
                self._forget(key)
        if self._expiring:
            self._sweep_timer = self.loop.call_at(self._expiring[0][0], self._sweep)

    def _forget_oldest(self, count: int) -> None:
        while count > 0 and self._expiring:
            batch = self._expiring[0][1]
            taken = list(islice(batch, count))
            for key in taken:
                del batch[key]
            if not batch:
                self._expiring.popleft()
            for key in taken:
                self._forget(key)
            count -= len(taken)
        self._warn(f"more than {self.limit} requests remembered")

    def _forget(self, key: _Key) -> None:
        self._recent_messages.pop(key, None)
        remote = key[0]
        own = self._by_remote.get(remote)
        if own and own[0][0] == key:  # else that remote's own limit forgot it already
            own.popleft()
            if not own:
                del self._by_remote[remote]

    def _warn(self, what: str) -> None:
        now = self.loop.time()
        if now - self._warned_at > 60:  # once a minute is enough to be seen
            self._warned_at = now
            log.warning("%s for duplicate detection: forgetting the oldest early", what)

    async def shutdown(self) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        await super().shutdown()
