"""Shared pieces of the DTLS integration tests: a test site and server/client helpers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator

import aiocoap
import aiocoap.resource as resource

from estcoap.dtls import (
    DtlsClientConfig,
    DtlsServerConfig,
    DtlsServerTransport,
    create_client_context,
    create_server_context,
)
from tests.dtls_util import Identity, Pki

BIG = bytes(range(256)) * 20  # 5120 bytes: needs Block2 at any block size


class Peer(resource.Resource):
    """Reports what the transport exposes about the client."""

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        remote = request.remote
        chain = remote.peer_certificates
        leaf = chain[0].subject.rfc4514_string() if chain else "-"
        unique = remote.tls_unique.hex() if remote.tls_unique else "-"
        return aiocoap.Message(payload=f"{leaf}|{unique}|{len(chain)}".encode())


class Big(resource.Resource):
    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=BIG)


class Echo(resource.Resource):
    """POST: answers with the SHA-256 of the reassembled body and its length."""

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        digest = hashlib.sha256(request.payload).hexdigest()
        body = f"{len(request.payload)} {digest}".encode()
        return aiocoap.Message(code=aiocoap.CHANGED, payload=body)


def make_site() -> resource.Site:
    site = resource.Site()
    site.add_resource(
        [".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader)
    )
    site.add_resource(["peer"], Peer())
    site.add_resource(["big"], Big())
    site.add_resource(["echo"], Echo())
    return site


def server_config(pki: Pki, **options: object) -> DtlsServerConfig:
    return DtlsServerConfig.from_files(
        pki.server.cert_path, pki.server.key_path, pki.ca.cert_path, **options
    )


def client_config(
    pki: Pki, identity: Identity | None = None, **options: object
) -> DtlsClientConfig:
    identity = identity or pki.client
    return DtlsClientConfig.from_files(
        pki.ca.cert_path, identity.cert_path, identity.key_path, **options
    )


@contextlib.asynccontextmanager
async def running_server(
    config: DtlsServerConfig, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[DtlsServerTransport, int]]:
    context, transport = await create_server_context(make_site(), [(host, 0)], config)
    try:
        yield transport, transport.bound_addresses[0][1]
    finally:
        await context.shutdown()


@contextlib.asynccontextmanager
async def client(config: DtlsClientConfig) -> AsyncIterator[aiocoap.Context]:
    context = await create_client_context(config)
    try:
        yield context
    finally:
        await context.shutdown()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def remote_for(context: aiocoap.Context, uri: str):
    """The client remote (DTLS association) a request to `uri` would use; handshakes if needed."""
    probe = aiocoap.Message(code=aiocoap.GET, uri=uri)
    await context.find_remote_and_interface(probe)
    return probe.remote


class RawClient(asyncio.DatagramProtocol):
    """A hand-driven DTLS client on its own UDP socket, for tests that need to send
    arbitrary datagrams from an established peer's address or reconnect from it."""

    def __init__(self, config: DtlsClientConfig, server: tuple[str, int]) -> None:
        from estcoap.dtls.association import check_server_name
        from estcoap.dtls.contexts import client_context

        self.server = server
        self.ctx = client_context(config, check_server_name)
        self.config = config
        self.udp: asyncio.DatagramTransport | None = None
        self.association = None
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.local: tuple | None = None

    async def open(self, local_port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self.udp, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", local_port), remote_addr=self.server
        )
        self.local = self.udp.get_extra_info("sockname")

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        from estcoap.dtls.association import ApplicationData

        if self.association is None:
            return
        for event in self.association.receive_datagram(data):
            if isinstance(event, ApplicationData):
                self.inbox.put_nowait(event.data)
        self.flush()

    def flush(self) -> None:
        for datagram in self.association.datagrams_to_send():
            self.udp.sendto(datagram)

    async def handshake(self, timeout: float = 5.0) -> None:
        from estcoap.dtls.association import DtlsAssociation, State

        self.association = DtlsAssociation.connect(self.ctx, self.server[0], datagram_limit=1232)
        self.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.association.state is State.HANDSHAKING:
            if loop.time() > deadline:
                raise TimeoutError("raw client handshake")
            await asyncio.sleep(0.01)
            delay = self.association.timeout()
            if delay is not None and delay <= 0:
                self.association.handle_timeout()
                self.flush()
        assert self.association.state is State.ESTABLISHED, self.association.error

    async def request(self, message: aiocoap.Message, timeout: float = 5.0) -> aiocoap.Message:
        """One NON request, one response (no retransmission: the tests run lossless)."""
        message.mtype = aiocoap.NON
        message.mid = 0x1234
        message.token = b"rawtok"
        self.association.send(message.encode())
        self.flush()
        data = await asyncio.wait_for(self.inbox.get(), timeout)
        return aiocoap.Message.decode(data)

    def send_raw(self, datagram: bytes) -> None:
        self.udp.sendto(datagram)

    def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
