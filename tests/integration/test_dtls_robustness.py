"""Bad input, floods, packet loss and reconnects against the DTLS server (real UDP)."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct

import aiocoap
import pytest
from aiocoap.numbers import TransportTuning

from estcoap.dtls.association import DtlsAssociation, check_server_name
from estcoap.dtls.contexts import client_context
from estcoap.dtls.records import split_records
from tests.integration.dtls_fixtures import (
    BIG,
    RawClient,
    client,
    client_config,
    running_server,
    server_config,
)

pytestmark = pytest.mark.timeout(60)


def garbage_datagrams() -> list[bytes]:
    rng = random.Random(7)
    header_only = struct.pack("!BHHHIH", 22, 0xFEFD, 0, 0, 0, 500)  # claims 500 bytes
    return [
        b"",
        b"\x00",
        bytes(rng.randrange(256) for _ in range(300)),
        header_only,
        header_only + b"\x01" * 20,  # truncated record
        struct.pack("!BHHHIH", 99, 0xFEFD, 0, 0, 0, 4) + b"abcd",  # unknown content type
        struct.pack("!BHHHIH", 22, 0x0303, 0, 0, 0, 4) + b"abcd",  # TLS, not DTLS
        struct.pack("!BHHHIH", 23, 0xFEFD, 1, 0, 5, 30) + os.urandom(30),  # app data, no session
        struct.pack("!BHHHIH", 22, 0xFEFD, 0, 0, 0, 10) + b"\x01" + b"\x00" * 9,  # short hello
    ]


def client_hellos(pki, count: int) -> list[bytes]:
    """Real ClientHellos (no cookie) from fresh client associations."""
    ctx = client_context(client_config(pki), check_server_name)
    hellos = []
    for _ in range(count):
        association = DtlsAssociation.connect(ctx, "127.0.0.1", datagram_limit=1232)
        hellos.extend(association.datagrams_to_send())
    return hellos


async def get(ctx: aiocoap.Context, port: int, path: str = "/peer") -> aiocoap.Message:
    uri = f"coaps://127.0.0.1:{port}{path}"
    return await ctx.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response


async def test_garbage_and_hello_flood_create_no_state(pki) -> None:
    hellos = client_hellos(pki, 40)
    # the same hellos with a forged cookie: still not one session
    forged = []
    for hello in hellos[:10]:
        record = bytearray(hello)
        session_id_at = 13 + 12 + 2 + 32
        cookie_at = session_id_at + 1 + record[session_id_at]
        assert record[cookie_at] == 0
        forged.append(
            bytes(record[:cookie_at]) + b"\x10" + os.urandom(16) + bytes(record[cookie_at + 1 :])
        )
    async with running_server(server_config(pki)) as (server, port):
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(20)]
        try:
            async with client(client_config(pki)) as ctx:
                real = asyncio.ensure_future(get(ctx, port, "/big"))
                for round_ in range(5):
                    for i, sock in enumerate(socks):
                        for datagram in garbage_datagrams() + hellos[i::20] + forged:
                            sock.sendto(datagram, ("127.0.0.1", port))
                    await asyncio.sleep(0.01 * round_)
                response = await real
                assert response.payload == BIG  # the real client was served meanwhile
                await asyncio.sleep(0.2)  # let every flood datagram arrive
                # only the real client has a session; the flood got HelloVerifyRequests
                (session,) = server.sessions.values()
                assert session.peer_certificates[0] == pki.client.certificate
                assert server.hello_verify_requests_sent >= 5 * 20 * 2
        finally:
            for sock in socks:
                sock.close()
    assert server.sessions == {}


async def test_bad_records_from_an_established_peer_are_ignored(pki) -> None:
    async with running_server(server_config(pki)) as (server, port):
        raw = RawClient(client_config(pki), ("127.0.0.1", port))
        await raw.open()
        try:
            await raw.handshake()
            unique = raw.association.tls_unique
            (session,) = server.sessions.values()
            assert session.tls_unique == unique

            # a valid application record, then broken variants of it
            probe = aiocoap.Message(code=aiocoap.GET, uri_path=["peer"])
            probe.mtype, probe.mid = aiocoap.NON, 1
            raw.association.send(probe.encode())
            (record,) = split_records(b"".join(raw.association.datagrams_to_send()))
            tampered = bytearray(record)
            tampered[-1] ^= 0xFF  # bad AEAD tag
            for bad in (
                record[:20],
                record[:-3],
                bytes(tampered),
                os.urandom(64),
                record[:13] + os.urandom(len(record) - 13),
            ):
                raw.send_raw(bad)
            for bad in garbage_datagrams():
                raw.send_raw(bad)
            await asyncio.sleep(0.1)
            assert raw.inbox.empty()  # nothing of that reached a resource

            raw.send_raw(record)  # the intact record: answered once ...
            first = await asyncio.wait_for(raw.inbox.get(), 2)
            assert aiocoap.Message.decode(first).code == aiocoap.CONTENT
            assert session.association.openssl_released
            raw.send_raw(record)  # ... and its replay is dropped by the replay window
            await asyncio.sleep(0.1)
            assert raw.inbox.empty()

            response = await raw.request(aiocoap.Message(code=aiocoap.GET, uri_path=["peer"]))
            assert response.code == aiocoap.CONTENT
            assert response.payload.split(b"|")[1] == unique.hex().encode()
            assert list(server.sessions.values()) == [session]  # same association
        finally:
            raw.close()


async def test_reconnect_from_same_address_and_port_replaces_session(pki) -> None:
    async with running_server(server_config(pki)) as (server, port):
        first = RawClient(client_config(pki), ("127.0.0.1", port))
        await first.open()
        local_port = first.local[1]
        await first.handshake()
        old = await first.request(aiocoap.Message(code=aiocoap.GET, uri_path=["peer"]))
        old_session = next(iter(server.sessions.values()))
        first.close()  # the device reboots: no close_notify
        await asyncio.sleep(0.05)  # the socket closes on the next loop iteration

        second = RawClient(client_config(pki), ("127.0.0.1", port))
        await second.open(local_port)
        try:
            await second.handshake()
            new = await second.request(aiocoap.Message(code=aiocoap.GET, uri_path=["peer"]))
            assert new.payload.split(b"|")[1] == second.association.tls_unique.hex().encode()
            assert new.payload != old.payload
            (session,) = server.sessions.values()
            assert session is not old_session and session.peer == ("127.0.0.1", local_port)
        finally:
            second.close()


class LossyRelay(asyncio.DatagramProtocol):
    """Forwards client <-> server datagrams, dropping every `period`-th one each way.

    Deterministic (20% with period 5) so the test never passes by luck: the second
    datagram of each direction (the cookie-bearing ClientHello and the server's first
    full flight) is always among the lost.
    """

    def __init__(self, server: tuple[str, int], period: int = 5) -> None:
        self.server = server
        self.period = period
        self.counts = {"up": 0, "down": 0}
        self.transport: asyncio.DatagramTransport | None = None
        self.upstreams: dict[tuple, asyncio.DatagramTransport] = {}
        self.dropped = self.forwarded = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def _lose(self, direction: str) -> bool:
        self.counts[direction] += 1
        if self.counts[direction] % self.period == 2 % self.period:
            self.dropped += 1
            return True
        self.forwarded += 1
        return False

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        upstream = self.upstreams.get(addr)
        if upstream is None:
            asyncio.ensure_future(self._open_upstream(addr, data))
            return
        if not self._lose("up"):
            upstream.sendto(data)

    async def _open_upstream(self, client_addr: tuple, first: bytes) -> None:
        relay = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple) -> None:
                if not relay._lose("down"):
                    relay.transport.sendto(data, client_addr)

        loop = asyncio.get_running_loop()
        upstream, _ = await loop.create_datagram_endpoint(Back, remote_addr=self.server)
        self.upstreams[client_addr] = upstream
        if not self._lose("up"):
            upstream.sendto(first)

    def close(self) -> None:
        for upstream in self.upstreams.values():
            upstream.close()
        if self.transport is not None:
            self.transport.close()


class QuickRetransmit(TransportTuning):
    ACK_TIMEOUT = 0.4
    MAX_RETRANSMIT = 8


async def test_twenty_percent_loss_each_way(pki) -> None:
    async with running_server(server_config(pki)) as (server, port):
        loop = asyncio.get_running_loop()
        _, relay = await loop.create_datagram_endpoint(
            lambda: LossyRelay(("127.0.0.1", port), period=5),
            local_addr=("127.0.0.1", 0),
        )
        relay_port = relay.transport.get_extra_info("sockname")[1]
        try:
            async with client(client_config(pki, handshake_timeout=20)) as ctx:
                base = f"coaps://127.0.0.1:{relay_port}"
                tuning = QuickRetransmit()
                get = aiocoap.Message(code=aiocoap.GET, uri=base + "/big", transport_tuning=tuning)
                response = await ctx.request(get).response
                assert response.payload == BIG
                body = BIG[:3000]
                post = aiocoap.Message(
                    code=aiocoap.POST, uri=base + "/echo", payload=body, transport_tuning=tuning
                )
                response = await ctx.request(post).response
                assert response.code == aiocoap.CHANGED
                assert response.payload.startswith(b"3000 ")
            assert relay.dropped > 0, (relay.dropped, relay.forwarded)
            assert len(server.sessions) <= 1
        finally:
            relay.close()
