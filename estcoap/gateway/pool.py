"""A small pool of keep-alive HTTPS connections to the upstream EST server.

One HttpsTransport carries one request at a time; the gateway serves many devices
at once, so it keeps up to `size` of them and lends an idle one per call. A call
that is abandoned mid-exchange (timeout, cancellation, error) closes its connection,
so a late answer can never be read as the answer to the next device's request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

from estcoap.client.https_transport import HttpsTransport
from estcoap.client.transport import Reply
from estcoap.codec.operations import ContentFormat, OperationSpec


class HttpsPool:
    """ClientTransport over up to `size` HttpsTransports made by `factory`."""

    def __init__(self, factory: Callable[[], HttpsTransport], size: int = 8) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self._factory = factory
        self.size = size
        self._idle: list[HttpsTransport] = []
        self._all: list[HttpsTransport] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    @property
    def connections_made(self) -> int:
        """TLS connections opened so far (keep-alive reuse keeps this low)."""
        return sum(t.connections_made for t in self._all)

    def _take(self) -> HttpsTransport:
        # Prefer a live connection (no handshake); the newest is the least likely stale.
        for transport in reversed(self._idle):
            if transport.connected:
                self._idle.remove(transport)
                return transport
        if self._idle:
            return self._idle.pop()
        transport = self._factory()
        self._all.append(transport)
        return transport

    async def call(
        self,
        spec: OperationSpec,
        label: str | None,
        body: bytes | None,
        accept: ContentFormat | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        if self._closed:
            raise RuntimeError("upstream pool is closed")
        async with self._slots:
            transport = self._take()
            healthy = False
            try:
                reply = await transport.call(spec, label, body, accept, headers=headers)
                healthy = True
                return reply
            finally:
                if not healthy:
                    # Request sent, answer unread (or unknown): this connection is spent.
                    with contextlib.suppress(Exception):
                        await asyncio.shield(transport.close())
                self._idle.append(transport)

    async def tls_unique(self) -> bytes | None:
        # The gateway never proves possession upstream: it is an RA (RFC 7030 s3.7).
        return None

    async def close(self) -> None:
        self._closed = True
        for transport in self._all:
            with contextlib.suppress(Exception):
                await transport.close()
        self._idle.clear()
