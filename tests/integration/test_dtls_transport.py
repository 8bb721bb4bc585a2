"""Certificate DTLS 1.2 under aiocoap: handshake, peer identity, blockwise, reuse (real UDP)."""

from __future__ import annotations

import hashlib

import aiocoap
import pytest
from aiocoap.optiontypes import BlockOption

from tests.integration.dtls_fixtures import (
    BIG,
    client,
    client_config,
    remote_for,
    running_server,
    server_config,
)
from tests.polling import wait_for

pytestmark = pytest.mark.timeout(60)


async def test_mutual_handshake_exposes_chain_and_tls_unique(pki) -> None:
    async with running_server(server_config(pki)) as (server, port):
        async with client(client_config(pki)) as ctx:
            uri = f"coaps://127.0.0.1:{port}/peer"
            response = await ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response
            assert response.code == aiocoap.CONTENT
            leaf, unique, length = response.payload.decode().split("|")
            assert leaf == "CN=device-1"
            assert length == "2"  # leaf + the trust anchor that verified it
            # both ends agree on tls-unique: the client's Finished (RFC 5929 s3.1)
            client_remote = await remote_for(ctx, uri)
            assert client_remote.tls_unique is not None and len(client_remote.tls_unique) == 12
            assert unique == client_remote.tls_unique.hex()
            assert client_remote.peer_certificates[0] == pki.server.certificate
            (session,) = server.sessions.values()
            assert session.association.cipher == "ECDHE-ECDSA-AES128-CCM8"
            assert session.peer_certificates[0] == pki.client.certificate
            # the confirmed session dropped OpenSSL; later requests use our record layer
            assert session.association.openssl_released
            again = await ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response
            assert again.payload == response.payload
            # ... and so did the client, once the server's first answer confirmed it
            assert client_remote.association.openssl_released
            for _ in range(3):
                more = await ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response
                assert more.payload == response.payload


@pytest.mark.parametrize("size_exp", [0, 2, 4, 6])  # 16, 64, 256, 1024-byte blocks
async def test_blockwise_get_and_post(pki, size_exp: int) -> None:
    async with running_server(server_config(pki)) as (_, port):
        async with client(client_config(pki)) as ctx:
            base = f"coaps://127.0.0.1:{port}"
            remote = await remote_for(ctx, base + "/echo")
            remote.maximum_block_size_exp = size_exp  # Block1 size for our requests
            body = bytes(reversed(BIG))[:4500]
            post = aiocoap.Message(code=aiocoap.POST, uri=base + "/echo", payload=body)
            response = await ctx.request(post).response
            assert response.code == aiocoap.CHANGED
            assert response.payload == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()

            get = aiocoap.Message(code=aiocoap.GET, uri=base + "/big")
            get.opt.block2 = BlockOption.BlockwiseTuple(0, False, size_exp)  # ask for small blocks
            response = await ctx.request(get).response
            assert response.code == aiocoap.CONTENT
            assert response.payload == BIG


async def test_one_association_per_endpoint_is_reused(pki) -> None:
    async with running_server(server_config(pki)) as (server, port):
        async with client(client_config(pki)) as ctx:
            uri = f"coaps://127.0.0.1:{port}/peer"
            first = await ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response
            second = await ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response
            assert first.payload == second.payload  # same tls-unique: same association
            assert len(server.sessions) == 1
        # the client's shutdown sent close_notify; the server forgot the session
        await wait_for(lambda: not server.sessions, timeout=2)


async def test_ipv6_listener_and_two_sockets(pki) -> None:
    from estcoap.dtls import create_server_context
    from tests.integration.dtls_fixtures import make_site

    context, server = await create_server_context(
        make_site(), [("127.0.0.1", 0), ("::1", 0)], server_config(pki)
    )
    try:
        (host4, port4), (host6, port6) = server.bound_addresses
        assert (host4, host6) == ("127.0.0.1", "::1")
        async with client(client_config(pki)) as ctx:
            for uri in (f"coaps://127.0.0.1:{port4}/peer", f"coaps://[::1]:{port6}/peer"):
                response = await ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response
                assert response.payload.startswith(b"CN=device-1|")
            assert len(server.sessions) == 2
    finally:
        await context.shutdown()


async def test_well_known_core_over_dtls(pki) -> None:
    async with running_server(server_config(pki)) as (_, port):
        async with client(client_config(pki)) as ctx:
            uri = f"coaps://127.0.0.1:{port}/.well-known/core"
            response = await ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response
            assert response.code == aiocoap.CONTENT
            assert b"</peer>" in response.payload


@pytest.mark.parametrize(
    "cipher",
    ["ECDHE-ECDSA-AES128-CCM8", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-CCM"],
)
async def test_each_offered_suite_works_after_openssl_is_released(pki, cipher: str) -> None:
    config = server_config(pki, ciphers=f"{cipher}:@SECLEVEL=0")
    async with running_server(config) as (server, port):
        async with client(client_config(pki)) as ctx:
            uri = f"coaps://127.0.0.1:{port}/echo"
            for size in (10, 3000):  # the second request runs on our AEAD record layer
                body = bytes(size)
                post = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=body)
                response = await ctx.request(post).response
                assert response.payload.startswith(f"{size} ".encode())
            (session,) = server.sessions.values()
            assert session.association.cipher == cipher
            assert session.association.openssl_released
