"""The simulator's relay on real loopback sockets: impairments, counters, retransmission
recognition; and the progress bar's terminal-only behaviour."""

from __future__ import annotations

import asyncio
import io
import os
import struct
import time

import pytest

from estcoap.simulate.progress import Progress
from estcoap.simulate.relay import (
    REORDER_HOLD,
    Impairment,
    TcpRelay,
    UdpRelay,
    datagram_shape,
)

pytestmark = pytest.mark.timeout(30)


class Endpoint(asyncio.DatagramProtocol):
    """A UDP socket that records what it receives and can answer."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, float]] = []
        self.arrived = asyncio.Event()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[no-untyped-def]
        self.received.append((data, time.monotonic()))
        self.arrived.set()

    @property
    def payloads(self) -> list[bytes]:
        return [data for data, _ in self.received]


async def udp(local=("127.0.0.1", 0), remote=None) -> tuple[Endpoint, tuple[str, int]]:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        Endpoint, local_addr=local, remote_addr=remote
    )
    return proto, transport.get_extra_info("sockname")[:2]


async def settle(condition, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def dtls_record(ctype: int, epoch: int, seq: int, body: bytes) -> bytes:
    return (
        struct.pack("!BHHHIH", ctype, 0xFEFD, epoch, seq >> 32, seq & 0xFFFFFFFF, len(body)) + body
    )


def test_shape_ignores_record_sequence_numbers() -> None:
    hello = b"\x01" + os.urandom(80)
    # a retransmitted handshake flight: same messages, new record numbers
    assert datagram_shape(dtls_record(22, 0, 1, hello)) == datagram_shape(
        dtls_record(22, 0, 7, hello)
    )
    assert datagram_shape(dtls_record(22, 0, 1, hello)) != datagram_shape(
        dtls_record(22, 0, 2, b"\x01" + os.urandom(80))
    )
    # encrypted records: type, epoch and length (the ciphertext changes on every send)
    assert datagram_shape(dtls_record(23, 1, 5, os.urandom(60))) == datagram_shape(
        dtls_record(23, 1, 9, os.urandom(60))
    )
    assert datagram_shape(dtls_record(23, 1, 5, os.urandom(60))) != datagram_shape(
        dtls_record(23, 1, 5, os.urandom(61))
    )
    two = dtls_record(22, 1, 3, os.urandom(40)) + dtls_record(23, 1, 4, os.urandom(30))
    assert datagram_shape(two) != datagram_shape(dtls_record(22, 1, 3, os.urandom(40)))
    # not DTLS (a truncated record, plain CoAP): the bytes themselves
    assert datagram_shape(b"\x40\x01\x00\x01") != datagram_shape(b"\x40\x01\x00\x02")
    assert datagram_shape(dtls_record(23, 1, 1, b"x" * 10)[:-1]) != datagram_shape(
        dtls_record(23, 1, 2, b"x" * 10)[:-1]
    )


async def test_clean_link_forwards_both_ways_and_counts_bytes() -> None:
    server, server_addr = await udp()
    relay = UdpRelay(server_addr)
    link = await relay.open_link()
    device, _ = await udp(remote=link.address)
    for i in range(20):
        device.transport.sendto(bytes([i]) * (i + 1))  # type: ignore[union-attr]
    await settle(lambda: len(server.received) == 20)
    assert server.payloads == [bytes([i]) * (i + 1) for i in range(20)]
    # the server answers to the address it saw: the link's own upstream socket
    flow = next(iter(link.flows.values()))
    upstream = flow.upstream.get_extra_info("sockname")  # type: ignore[union-attr]
    server.transport.sendto(b"answer", upstream)  # type: ignore[union-attr]
    await settle(lambda: device.payloads == [b"answer"])
    assert link.traffic.up.datagrams == 20 and link.traffic.up.bytes == sum(range(1, 21))
    assert link.traffic.down.datagrams == 1 and link.traffic.down.bytes == 6
    assert link.traffic.up.retransmissions == 0
    await link.close()
    assert relay.totals.up.bytes == 210 and relay.totals.down.bytes == 6
    assert relay.links_open == 0


async def test_each_device_socket_gets_its_own_upstream_address() -> None:
    server, server_addr = await udp()
    relay = UdpRelay(server_addr)
    link = await relay.open_link()
    first, _ = await udp(remote=link.address)
    second, _ = await udp(remote=link.address)
    first.transport.sendto(b"a")  # type: ignore[union-attr]
    second.transport.sendto(b"b")  # type: ignore[union-attr]
    await settle(lambda: len(server.received) == 2)
    assert len(link.flows) == 2
    ports = {f.upstream.get_extra_info("sockname")[1] for f in link.flows.values()}  # type: ignore[union-attr]
    assert len(ports) == 2  # so the server keeps two DTLS sessions apart
    await link.close()


async def test_loss_and_duplication_follow_the_probabilities() -> None:
    server, server_addr = await udp()
    relay = UdpRelay(server_addr, Impairment(loss=0.3, duplicate=0.2), seed=11)
    link = await relay.open_link()
    device, _ = await udp(remote=link.address)
    up = link.traffic.up
    for i in range(1000):
        device.transport.sendto(i.to_bytes(2, "big"))  # type: ignore[union-attr]
        if i % 10 == 9:  # in bursts the socket buffers hold: loss is the relay's alone
            await settle(lambda: up.datagrams == i + 1)  # noqa: B023
    await settle(lambda: len(server.received) == 1000 - up.dropped + up.duplicated)
    assert 240 < up.dropped < 360  # 30% of 1000, with room for chance
    assert 110 < up.duplicated < 200  # 20% of the ~700 that survived
    assert len(set(server.payloads)) == 1000 - up.dropped
    await link.close()


async def test_delay_is_added_to_every_datagram() -> None:
    server, server_addr = await udp()
    relay = UdpRelay(server_addr, Impairment(delay_ms=80))
    link = await relay.open_link()
    device, _ = await udp(remote=link.address)
    sent = time.monotonic()
    device.transport.sendto(b"late")  # type: ignore[union-attr]
    await settle(lambda: server.received)
    assert server.received[0][1] - sent >= 0.075
    await link.close()


async def test_reordering_lets_the_next_datagram_overtake() -> None:
    server, server_addr = await udp()
    relay = UdpRelay(server_addr, Impairment(reorder=0.5), seed=5)
    link = await relay.open_link()
    device, _ = await udp(remote=link.address)
    for i in range(200):
        device.transport.sendto(i.to_bytes(2, "big"))  # type: ignore[union-attr]
        await asyncio.sleep(0.002)
    await settle(lambda: len(server.received) == 200)
    order = [int.from_bytes(p, "big") for p in server.payloads]
    assert sorted(order) == list(range(200))  # nothing lost or duplicated
    swapped = sum(1 for a, b in zip(order, order[1:], strict=False) if a > b)
    # each reordering is one inversion (unless the last datagram waited out its hold)
    assert link.traffic.up.reordered - 1 <= swapped <= link.traffic.up.reordered
    assert swapped > 20
    # a held datagram with no successor still goes after the hold time
    device.transport.sendto(b"\xff\xff")  # type: ignore[union-attr]
    await asyncio.sleep(REORDER_HOLD + 0.1)
    assert server.payloads[-1] == b"\xff\xff"
    await link.close()


async def test_repeats_before_an_answer_are_retransmissions() -> None:
    server, server_addr = await udp()
    relay = UdpRelay(server_addr)
    link = await relay.open_link()
    device, _ = await udp(remote=link.address)
    flight = dtls_record(22, 0, 0, b"\x01hello")
    for seq in range(3):  # the timer fires twice: same flight, new record numbers
        device.transport.sendto(dtls_record(22, 0, seq, b"\x01hello"))  # type: ignore[union-attr]
        await asyncio.sleep(0.02)
    await settle(lambda: len(server.received) == 3)
    assert link.traffic.up.retransmissions == 2
    # the server answers; the device sending the same shape again is a new message, not a repeat
    upstream = next(iter(link.flows.values())).upstream.get_extra_info("sockname")  # type: ignore[union-attr]
    server.transport.sendto(b"verify", upstream)  # type: ignore[union-attr]
    await settle(lambda: device.received)
    device.transport.sendto(flight)  # type: ignore[union-attr]
    await settle(lambda: len(server.received) == 4)
    assert link.traffic.up.retransmissions == 2
    await link.close()


async def test_dead_server_is_silence_not_a_crash() -> None:
    _, server_addr = await udp()
    gone, _ = await udp()
    port = gone.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
    gone.transport.close()  # type: ignore[union-attr]
    relay = UdpRelay(("127.0.0.1", port))
    link = await relay.open_link()
    device, _ = await udp(remote=link.address)
    for _ in range(3):
        device.transport.sendto(b"anyone?")  # type: ignore[union-attr]
        await asyncio.sleep(0.05)
    assert link.traffic.up.datagrams == 3 and not device.received
    await link.close()


async def test_tcp_link_counts_both_directions() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readexactly(1000)
        writer.write(data * 3)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    relay = TcpRelay(server.sockets[0].getsockname()[:2])
    link = await relay.open_link()
    reader, writer = await asyncio.open_connection(*link.address)
    writer.write(b"x" * 1000)
    assert await reader.readexactly(3000) == b"x" * 3000
    writer.close()
    await settle(lambda: link.traffic.down.bytes == 3000)
    assert link.traffic.up.bytes == 1000
    await link.close()
    assert relay.totals.up.bytes == 1000 and relay.totals.down.bytes == 3000
    server.close()


def test_impairment_refuses_impossible_values() -> None:
    for bad in ({"loss": 1.0}, {"duplicate": -0.1}, {"reorder": 2}, {"delay_ms": -1}):
        with pytest.raises(ValueError):
            Impairment(**bad)  # type: ignore[arg-type]
    assert not Impairment().active and Impairment(delay_ms=5).active


def test_progress_bar_only_on_a_terminal() -> None:
    quiet = io.StringIO()
    bar = Progress(3, stream=quiet)  # a StringIO is not a terminal
    for ok in (True, False, True):
        bar.update(ok)
    bar.finish()
    assert quiet.getvalue() == ""

    shown = io.StringIO()
    bar = Progress(2, stream=shown, enabled=True)
    bar.update(True)
    bar.update(False)
    bar.finish()
    last = shown.getvalue().rstrip("\n").split("\r")[-1]
    assert last.startswith("[" + "#" * 30 + "] 2/2  failed 1")
