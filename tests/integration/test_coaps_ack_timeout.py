"""The client's CoAP ACK_TIMEOUT (RFC 7252 s4.8) is configurable, and a request none of
whose retransmissions is answered fails as "no answer" (a timeout, to the simulator)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from estcoap.client.api import EstClientError
from estcoap.client.coaps_transport import CoapsTransportError
from estcoap.simulate import failure_reason
from tests.integration.coaps_fixtures import make_deployment, running_coaps

APPLICATION_DATA = 23  # DTLS record content type


class HandshakeOnlyRelay(asyncio.DatagramProtocol):
    """Forwards the DTLS handshake both ways and drops every application-data datagram
    from the client: the session is made, then no CoAP request ever reaches the server."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self.upstream: asyncio.DatagramTransport | None = None
        self.client: tuple | None = None
        self.requests_dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.client = addr
        if data[:1] == bytes([APPLICATION_DATA]):
            self.requests_dropped += 1
            return
        if self.upstream is not None:
            self.upstream.sendto(data)

    async def open(self) -> None:
        relay = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple) -> None:
                if relay.transport is not None and relay.client is not None:
                    relay.transport.sendto(data, relay.client)

        loop = asyncio.get_running_loop()
        self.upstream, _ = await loop.create_datagram_endpoint(Back, remote_addr=self.server)


async def test_unanswered_retransmissions_fail_as_no_answer(tmp_path: Path) -> None:
    deployment = make_deployment(tmp_path)
    device = deployment.device("ack-timeout-device")
    async with running_coaps(deployment) as running:
        relay = HandshakeOnlyRelay(("127.0.0.1", running.server.port))
        loop = asyncio.get_running_loop()
        listener, _ = await loop.create_datagram_endpoint(
            lambda: relay, local_addr=("127.0.0.1", 0)
        )
        await relay.open()
        port = listener.get_extra_info("sockname")[1]
        try:
            # ACK_TIMEOUT 0.05 s: the first try and 4 retransmissions go unanswered
            # long before the request's own 60 s bound, which would say "in 60 s".
            client = running.client(
                device,
                url=f"coaps://127.0.0.1:{port}{running.server.root}",
                server_name="127.0.0.1",
                timeout=60,
                ack_timeout=0.05,
            )
            async with client:
                with pytest.raises(EstClientError) as caught:
                    await client.cacerts()
        finally:
            listener.close()
            if relay.upstream is not None:
                relay.upstream.close()
    chain, seen = [], caught.value
    while seen is not None:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    transport_errors = [e for e in chain if isinstance(e, CoapsTransportError)]
    assert transport_errors, chain
    assert "to the request or its retransmissions" in str(transport_errors[0])
    assert failure_reason(caught.value) == "timeout"
    assert relay.requests_dropped == 5  # RFC 7252 s4.2: the request and MAX_RETRANSMIT (4)
