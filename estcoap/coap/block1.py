"""Block1 reassembly with the limits an EST server needs (RFC 7959 s2.5, 2.9).

aiocoap's own spool has no size cap, no cap on how many bodies a peer may have open,
and fails with 5.00 on a gap; EST needs 4.13 + Size1 over the size cap, 4.08 for a block
out of sequence, and a bound on everything peers can make it hold: at most
`per_session` open bodies per DTLS session, `total` open bodies and `total_bytes`
buffered bytes across all sessions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable
from dataclasses import dataclass

from aiocoap import Message
from aiocoap.numbers.codes import Code

ASSEMBLY_LIFETIME = 93.0  # RFC 7252 MAX_TRANSMIT_WAIT: a sender gives up by then

# An enrolling device has one body in flight; a few allow for a restarted transfer
# whose abandoned first attempt has not expired yet.
DEFAULT_PER_SESSION = 4
DEFAULT_TOTAL = 1024
DEFAULT_TOTAL_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Block1Limits:
    """What open Block1 bodies may hold: per DTLS session, in count, and in bytes."""

    per_session: int = DEFAULT_PER_SESSION
    total: int = DEFAULT_TOTAL
    total_bytes: int = DEFAULT_TOTAL_BYTES


DEFAULT_BLOCK1_LIMITS = Block1Limits()


class Block1Refusal(Exception):
    """A reassembly failure that is answered with a CoAP error response."""

    def __init__(
        self,
        code: Code,
        diagnostic: str,
        size1: int | None = None,
        max_age: int | None = None,
    ):
        super().__init__(diagnostic)
        self.code = code
        self.size1 = size1
        self.max_age = max_age

    def to_message(self) -> Message:
        message = Message(code=self.code, payload=str(self).encode())
        if self.size1 is not None:
            message.opt.size1 = self.size1
        if self.max_age is not None:
            message.opt.max_age = self.max_age
        return message


class Block1Continue(Exception):
    """More blocks are expected: answer 2.31 Continue echoing the Block1 option."""

    def __init__(self, request: Message):
        super().__init__("continue")
        self.block1 = request.opt.block1

    def to_message(self) -> Message:
        message = Message(code=Code.CONTINUE)
        message.opt.block1 = self.block1
        return message


@dataclass
class _Assembly:
    session: Hashable
    payload: bytearray
    expires: float


class Block1Assembler:
    def __init__(self, max_size: int, limits: Block1Limits = DEFAULT_BLOCK1_LIMITS):
        if min(max_size, limits.per_session, limits.total, limits.total_bytes) < 1:
            raise ValueError("Block1 limits must be positive")
        self.max_size = max_size
        self.per_session = limits.per_session
        self.total = limits.total
        self.total_bytes = limits.total_bytes
        self.held_bytes = 0  # payload bytes buffered in open assemblies
        self._assemblies: dict[tuple, _Assembly] = {}
        self._open_per_session: dict[Hashable, int] = {}
        self._next_sweep = 0.0

    @property
    def open_assemblies(self) -> int:
        return len(self._assemblies)

    def open_for(self, session: Hashable) -> int:
        return self._open_per_session.get(session, 0)

    @staticmethod
    def _key(request: Message, scope: object) -> tuple:
        # The site strips Uri-Path before resources see a request: `scope` names the resource.
        return (scope, request.remote.blockwise_key, request.code, tuple(request.opt.uri_query))

    def feed(self, request: Message, scope: object) -> Message:
        """Return the whole request, or raise Block1Continue / Block1Refusal."""
        self._expire()
        block1 = request.opt.block1
        announced = request.opt.size1
        if announced is not None and announced > self.max_size:
            raise self._too_large()
        if block1 is None:
            if len(request.payload) > self.max_size:
                raise self._too_large()
            return request
        key = self._key(request, scope)
        if block1.size_exponent == 7:
            # RFC 7959 s2.2: SZX 7 is reserved (BERT needs a reliable transport).
            self._discard(key)
            raise Block1Refusal(Code.BAD_REQUEST, "Block1 SZX 7 is reserved")
        if block1.more and len(request.payload) != block1.size:
            self._discard(key)
            raise Block1Refusal(Code.BAD_REQUEST, "Block1 payload size does not match SZX")
        if block1.block_number == 0:
            self._discard(key)  # a restart replaces the earlier attempt
            if not block1.more:  # the whole body in one block: nothing to hold
                if len(request.payload) > self.max_size:
                    raise self._too_large()
                return request
            assembly = self._open(key, request.remote.blockwise_key)
        else:
            found = self._assemblies.get(key)
            if found is not None and found.expires < time.monotonic():
                found = None  # past its lifetime, whether or not a sweep ran yet
            if found is None or block1.start != len(found.payload):
                self._discard(key)
                raise Block1Refusal(
                    Code.REQUEST_ENTITY_INCOMPLETE, "Block1 block out of sequence or unknown"
                )
            assembly = found
        if len(assembly.payload) + len(request.payload) > self.max_size:
            self._discard(key)
            raise self._too_large()
        if self.held_bytes + len(request.payload) > self.total_bytes:
            self._discard(key)
            raise self._busy("the server holds too many request bodies", self._soonest_expiry())
        assembly.payload += request.payload
        self.held_bytes += len(request.payload)
        assembly.expires = time.monotonic() + ASSEMBLY_LIFETIME
        if block1.more:
            raise Block1Continue(request)
        self._discard(key)
        return request.copy(payload=bytes(assembly.payload))

    def _open(self, key: tuple, session: Hashable) -> _Assembly:
        if self.open_for(session) >= self.per_session:
            raise self._busy(
                f"this session has {self.per_session} request bodies open",
                self._soonest_expiry(session),
            )
        if len(self._assemblies) >= self.total:
            raise self._busy("the server holds too many request bodies", self._soonest_expiry())
        assembly = _Assembly(session, bytearray(), time.monotonic() + ASSEMBLY_LIFETIME)
        self._assemblies[key] = assembly
        self._open_per_session[session] = self.open_for(session) + 1
        return assembly

    def _discard(self, key: tuple) -> None:
        assembly = self._assemblies.pop(key, None)
        if assembly is None:
            return
        self.held_bytes -= len(assembly.payload)
        left = self._open_per_session[assembly.session] - 1
        if left:
            self._open_per_session[assembly.session] = left
        else:
            del self._open_per_session[assembly.session]

    def _too_large(self) -> Block1Refusal:
        return Block1Refusal(
            Code.REQUEST_ENTITY_TOO_LARGE,
            f"request body over {self.max_size} bytes",
            size1=self.max_size,
        )

    @staticmethod
    def _busy(why: str, retry_after: float) -> Block1Refusal:
        # Over a count or memory cap the body itself is acceptable, so not 4.13: RFC 7959
        # s2.9.3 makes 4.13 (with Size1) say the body is too large for the resource, and
        # a client would shrink or give up. The server is out of room for now, which is
        # RFC 7252 s5.9.3.4's 5.03 Service Unavailable; Max-Age says when an open body
        # expires at the latest (RFC 9148 s4.7 uses the same pair for "retry later").
        seconds = max(1, math.ceil(retry_after))
        return Block1Refusal(
            Code.SERVICE_UNAVAILABLE, f"{why}; retry after Max-Age", max_age=seconds
        )

    def _soonest_expiry(self, session: Hashable | None = None) -> float:
        now = time.monotonic()
        expiries = [
            a.expires for a in self._assemblies.values() if session is None or a.session == session
        ]
        return min(expiries, default=now + 1.0) - now

    def _expire(self) -> None:
        # Most requests fit one datagram: scan only when assemblies are open, and at most
        # once a second (a lifetime of 93 s need not be cut to the millisecond).
        if not self._assemblies:
            return
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        stale = [key for key, a in self._assemblies.items() if a.expires < now]
        for key in stale:
            self._discard(key)
