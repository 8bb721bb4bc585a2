"""Shared pieces of the DTLS integration tests: a test site and server/client helpers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator

import aiocoap
import aiocoap.resource as resource
import pytest

from estcoap.dtls import (
    DtlsClientConfig,
    DtlsServerConfig,
    DtlsServerTransport,
    create_client_context,
    create_server_context,
)
from tests.dtls_util import Identity, Pki, make_pki

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
        return aiocoap.Message(code=aiocoap.CHANGED, payload=f"{len(request.payload)} {digest}".encode())


def make_site() -> resource.Site:
    site = resource.Site()
    site.add_resource([".well-known", "core"],
                      resource.WKCResource(site.get_resources_as_linkheader))
    site.add_resource(["peer"], Peer())
    site.add_resource(["big"], Big())
    site.add_resource(["echo"], Echo())
    return site


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("dtls-pki"))


def server_config(pki: Pki, **options: object) -> DtlsServerConfig:
    return DtlsServerConfig.from_files(pki.server.cert_path, pki.server.key_path,
                                       pki.ca.cert_path, **options)


def client_config(pki: Pki, identity: Identity | None = None, **options: object
                  ) -> DtlsClientConfig:
    identity = identity or pki.client
    return DtlsClientConfig.from_files(pki.ca.cert_path, identity.cert_path,
                                       identity.key_path, **options)


@contextlib.asynccontextmanager
async def running_server(config: DtlsServerConfig, host: str = "127.0.0.1"
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


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
