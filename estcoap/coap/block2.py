"""aiocoap's Block2 response cache, bounded (RFC 7959 s2.4; issue 11).

A response larger than one block is kept so the following blocks come from the same
rendering (an enrollment is not repeated per block). aiocoap keeps each one for
MAX_TRANSMIT_WAIT (93 s) with no bound, keyed by the request's options: a session that
asks for block 0 of /crts with a different elective option each time makes it hold a
copy per request. Here a session keeps at most `per_session` responses and the cache
`total`, the oldest going first; a client whose response went asks again from block 0
after its 4.08, as RFC 7959 s2.9.2 lets it.
"""

from __future__ import annotations

from aiocoap.blockwise import Block2Cache
from aiocoap.numbers import TransportTuning
from aiocoap.util.asyncio.timeoutdict import TimeoutDict

DEFAULT_PER_SESSION = 4
DEFAULT_TOTAL = 1024
MAX_TRANSMIT_WAIT = TransportTuning().MAX_TRANSMIT_WAIT  # what aiocoap keeps them for


class _Bounded(TimeoutDict):
    def __init__(self, timeout: float, per_session: int, total: int) -> None:
        super().__init__(timeout)
        self.per_session = per_session
        self.total = total

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        # Keys are (remote.blockwise_key, code, options): [0] is the DTLS session. The
        # scan is over at most `total` keys, and only when a response needs blocks.
        own = [k for k in self._items if k[0] == key[0]]
        for oldest in own[: max(0, len(own) - self.per_session)]:
            del self._items[oldest]
        while len(self._items) > self.total:
            del self._items[next(iter(self._items))]

    def __len__(self) -> int:
        return len(self._items)


class BoundedBlock2Cache(Block2Cache):
    def __init__(self, per_session: int = DEFAULT_PER_SESSION, total: int = DEFAULT_TOTAL):
        super().__init__()
        self._completes = _Bounded(MAX_TRANSMIT_WAIT, per_session, total)

    @property
    def held(self) -> int:
        return len(self._completes)
