"""Who the DTLS server refuses, and the limits it enforces (real UDP on loopback)."""

from __future__ import annotations

import asyncio
import socket
import time

import aiocoap
import pytest

from estcoap.dtls import (
    DtlsClientConfig,
    HandshakeFailed,
    HandshakeTimeout,
    PeerNameMismatch,
)
from estcoap.dtls.association import DtlsAssociation, State, check_server_name
from estcoap.dtls.contexts import client_context
from tests.integration.dtls_fixtures import (
    client,
    client_config,
    running_server,
    server_config,
)
from tests.polling import wait_for

pytestmark = pytest.mark.timeout(30)


async def get_peer(ctx: aiocoap.Context, port: int) -> aiocoap.Message:
    uri = f"coaps://127.0.0.1:{port}/peer"
    return await ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        ("none", "handshake failure"),  # no client certificate at all
        ("untrusted_client", "unknown ca"),
        ("expired_client", "certificate expired"),
    ],
)
async def test_server_refuses_client(pki, who: str, reason: str) -> None:
    if who == "none":
        config = DtlsClientConfig(trust_anchors=[pki.ca.certificate])
    else:
        config = client_config(pki, getattr(pki, who))
    async with running_server(server_config(pki)) as (server, port):
        async with client(config) as ctx:
            with pytest.raises(HandshakeFailed) as info:
                await get_peer(ctx, port)
            assert reason in str(info.value).lower()
        assert server.sessions == {}
        assert server.refused_handshakes == 1
        # the refused client left nothing behind; a good one is still served
        async with client(client_config(pki)) as ctx:
            assert (await get_peer(ctx, port)).payload.startswith(b"CN=device-1|")


async def test_client_certificate_optional_by_configuration(pki) -> None:
    config = server_config(pki, require_client_certificate=False)
    async with running_server(config) as (_, port):
        async with client(DtlsClientConfig(trust_anchors=[pki.ca.certificate])) as ctx:
            response = await get_peer(ctx, port)
            leaf, unique, length = response.payload.decode().split("|")
            assert (leaf, length) == ("-", "0")
            assert len(bytes.fromhex(unique)) == 12  # tls-unique exists without a client cert
        async with client(client_config(pki, pki.untrusted_client)) as ctx:
            # optional does not mean unverified: a certificate that is sent must verify
            with pytest.raises(HandshakeFailed):
                await get_peer(ctx, port)


async def test_client_checks_server_name(pki) -> None:
    async with running_server(server_config(pki)) as (_, port):
        async with client(client_config(pki, server_name="est.example.com")) as ctx:
            with pytest.raises(PeerNameMismatch, match="est.example.com"):
                await get_peer(ctx, port)
        async with client(client_config(pki, server_name="localhost")) as ctx:
            assert (await get_peer(ctx, port)).code == aiocoap.CONTENT
        async with client(client_config(pki)) as ctx:  # default: the URI host, an IP SAN
            assert (await get_peer(ctx, port)).code == aiocoap.CONTENT


async def test_client_rejects_untrusted_server(pki) -> None:
    config = DtlsClientConfig.from_files(
        pki.other_ca.cert_path, pki.client.cert_path, pki.client.key_path
    )
    async with running_server(server_config(pki)) as (_, port):
        async with client(config) as ctx:
            with pytest.raises(HandshakeFailed, match="verify failed"):
                await get_peer(ctx, port)


async def test_client_handshake_timeout_is_clear() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # swallows everything
    silent.bind(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    try:
        config = DtlsClientConfig(trust_anchors=[], handshake_timeout=0.5)
        async with client(config) as ctx:
            started = time.monotonic()
            with pytest.raises(HandshakeTimeout, match=r"within 0.5 s"):
                await get_peer(ctx, port)
            assert time.monotonic() - started < 2.0
    finally:
        silent.close()


async def test_max_sessions_limit(pki) -> None:
    async with running_server(server_config(pki, max_sessions=1)) as (server, port):
        async with client(client_config(pki)) as first:
            assert (await get_peer(first, port)).code == aiocoap.CONTENT
            async with client(client_config(pki, handshake_timeout=1.0)) as second:
                with pytest.raises(HandshakeTimeout):
                    await get_peer(second, port)
            assert len(server.sessions) == 1
            assert (await get_peer(first, port)).code == aiocoap.CONTENT


async def test_idle_session_is_closed_and_client_reconnects(pki) -> None:
    async with running_server(server_config(pki, idle_timeout=0.3)) as (server, port):
        async with client(client_config(pki)) as ctx:
            first = (await get_peer(ctx, port)).payload
            await wait_for(lambda: not server.sessions, timeout=3)
            # close_notify reached the client: its next request handshakes afresh
            second = (await get_peer(ctx, port)).payload
            assert first.split(b"|")[1] != second.split(b"|")[1]  # new tls-unique


async def test_half_open_handshake_times_out(pki) -> None:
    """A peer that passes the cookie check and then goes silent loses its session."""
    async with running_server(server_config(pki, handshake_timeout=0.3)) as (server, port):
        ctx = client_context(client_config(pki), check_server_name)
        association = DtlsAssociation.connect(ctx, "127.0.0.1", datagram_limit=1232)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("127.0.0.1", port))
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            for datagram in association.datagrams_to_send():  # ClientHello
                sock.send(datagram)
            hvr = await asyncio.wait_for(loop.sock_recv(sock, 2048), 2)
            association.receive_datagram(hvr)
            for datagram in association.datagrams_to_send():  # ClientHello + cookie
                sock.send(datagram)
            await asyncio.wait_for(loop.sock_recv(sock, 4096), 2)  # server flight; no answer
            assert len(server.sessions) == 1
            (session,) = server.sessions.values()
            assert session.association.state is State.HANDSHAKING
            await wait_for(lambda: not server.sessions, timeout=3)
