"""Block1 reassembly with the limits an EST server needs (RFC 7959 s2.5, 2.9).

aiocoap's own spool has no size cap and fails with 5.00 on a gap; EST needs
4.13 + Size1 over the cap and 4.08 for a block out of sequence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiocoap import Message
from aiocoap.numbers.codes import Code

ASSEMBLY_LIFETIME = 93.0  # RFC 7252 MAX_TRANSMIT_WAIT: a sender gives up by then


class Block1Refusal(Exception):
    """A reassembly failure that is answered with a CoAP error response."""

    def __init__(self, code: Code, diagnostic: str, size1: int | None = None):
        super().__init__(diagnostic)
        self.code = code
        self.size1 = size1

    def to_message(self) -> Message:
        message = Message(code=self.code, payload=str(self).encode())
        if self.size1 is not None:
            message.opt.size1 = self.size1
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
    request: Message
    payload: bytearray
    expires: float


class Block1Assembler:
    def __init__(self, max_size: int):
        self.max_size = max_size
        self._assemblies: dict[tuple, _Assembly] = {}
        self._next_sweep = 0.0

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
        if block1.more and len(request.payload) != block1.size:
            self._assemblies.pop(key, None)
            raise Block1Refusal(Code.BAD_REQUEST, "Block1 payload size does not match SZX")
        if block1.block_number == 0:
            assembly = _Assembly(request, bytearray(), 0.0)
            self._assemblies[key] = assembly
        else:
            found = self._assemblies.get(key)
            if found is not None and found.expires < time.monotonic():
                found = None  # past its lifetime, whether or not a sweep ran yet
            if found is None or block1.start != len(found.payload):
                self._assemblies.pop(key, None)
                raise Block1Refusal(
                    Code.REQUEST_ENTITY_INCOMPLETE, "Block1 block out of sequence or unknown"
                )
            assembly = found
        assembly.payload += request.payload
        assembly.expires = time.monotonic() + ASSEMBLY_LIFETIME
        if len(assembly.payload) > self.max_size:
            del self._assemblies[key]
            raise self._too_large()
        if block1.more:
            raise Block1Continue(request)
        del self._assemblies[key]
        whole = request.copy(payload=bytes(assembly.payload))
        return whole

    def _too_large(self) -> Block1Refusal:
        return Block1Refusal(
            Code.REQUEST_ENTITY_TOO_LARGE,
            f"request body over {self.max_size} bytes",
            size1=self.max_size,
        )

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
            del self._assemblies[key]
