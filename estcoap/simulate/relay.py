"""Relays between simulated devices and the real server, counting every byte.

Each device gets its own *link*: a listening socket on loopback that forwards to the
server, so every datagram (DTLS handshake, CoAP, alerts) is attributed to the device
that caused it. UDP links apply impairments to real datagrams: loss, duplication,
reordering and a fixed delay, independently in each direction. The TCP link (for
https://) only counts bytes: TCP hides loss from the application.

Retransmissions are recognised on the wire, without help from either endpoint: a
sender that emits a datagram of the same shape as one it already sent, and has
received nothing since, is repeating itself because a timer fired. The shape is the
DTLS record layout with the per-record sequence number left out (plaintext handshake
records compared byte for byte, encrypted records by type, epoch and length), since
DTLS re-encrypts and renumbers every retransmitted flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

Address = tuple[str, int]

REORDER_HOLD = 0.05  # seconds a reordered datagram waits for a successor before it goes anyway
_DTLS_HEADER = struct.Struct("!BHHHIH")  # type, version, epoch, seq (48 bits), length
_DTLS_TYPES = range(20, 26)


@dataclass(frozen=True)
class Impairment:
    """What the relay does to each datagram, per direction. Probabilities in [0, 1)."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay_ms: float = 0.0

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1), got {value:g}")
        if not 0.0 <= self.delay_ms <= 60_000:
            raise ValueError(f"delay must be 0 to 60000 ms, got {self.delay_ms:g}")

    @property
    def active(self) -> bool:
        return any((self.loss, self.duplicate, self.reorder, self.delay_ms))


@dataclass
class Counters:
    """One direction of traffic as the sender emitted it (before any impairment)."""

    datagrams: int = 0  # datagrams (UDP) or reads (TCP) sent
    bytes: int = 0
    retransmissions: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0

    def add(self, other: Counters) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Traffic:
    up: Counters = field(default_factory=Counters)  # device -> server
    down: Counters = field(default_factory=Counters)  # server -> device

    def add(self, other: Traffic) -> None:
        self.up.add(other.up)
        self.down.add(other.down)


def datagram_shape(data: bytes) -> int:
    """A hash of what a retransmission of `data` would look like (see module doc)."""
    parts: list[object] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _DTLS_HEADER.size:
            return hash(data)
        ctype, _version, epoch, _s1, _s2, length = _DTLS_HEADER.unpack_from(data, offset)
        body = offset + _DTLS_HEADER.size
        if ctype not in _DTLS_TYPES or body + length > len(data):
            return hash(data)  # not DTLS (e.g. plain CoAP): compare the bytes
        if epoch == 0:
            parts.append(data[body : body + length])
        else:
            parts.append((ctype, epoch, length))
        offset = body + length
    return hash(tuple(parts))


class _Direction:
    """Impairment and counting for one direction of one flow."""

    def __init__(self, relay: UdpRelay, counters: Counters, deliver: Callable[[bytes], None]):
        self.relay = relay
        self.counters = counters
        self.deliver_now = deliver
        self.unanswered: set[int] = set()  # shapes sent since this sender last received
        self.held: bytes | None = None
        self.held_timer: asyncio.TimerHandle | None = None
        self.reverse: _Direction | None = None

    def submit(self, data: bytes) -> None:
        c = self.counters
        c.datagrams += 1
        c.bytes += len(data)
        shape = datagram_shape(data)
        if shape in self.unanswered:
            c.retransmissions += 1
        else:
            self.unanswered.add(shape)
        imp, rng = self.relay.impairment, self.relay.rng
        if imp.loss and rng.random() < imp.loss:
            c.dropped += 1
            return
        copies = 1
        if imp.duplicate and rng.random() < imp.duplicate:
            c.duplicated += 1
            copies = 2
        if imp.reorder and self.held is None and rng.random() < imp.reorder:
            c.reordered += 1
            self.held = data
            self.held_timer = self.relay.loop.call_later(REORDER_HOLD, self._release)
            return
        for _ in range(copies):
            self._schedule(data)
        self._release()  # a held datagram now arrives after the one that overtook it

    def _release(self) -> None:
        if self.held_timer is not None:
            self.held_timer.cancel()
            self.held_timer = None
        if self.held is not None:
            data, self.held = self.held, None
            self._schedule(data)

    def _schedule(self, data: bytes) -> None:
        delay = self.relay.impairment.delay_ms / 1000.0
        if delay:
            self.relay.loop.call_later(delay, self._deliver, data)
        else:
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        if self.reverse is not None:
            self.reverse.unanswered.clear()  # the receiver heard something: not a repeat
        self.deliver_now(data)

    def close(self) -> None:
        if self.held_timer is not None:
            self.held_timer.cancel()
        self.held = None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable from a dead server: the device's timers will notice


class _Flow:
    """One device socket <-> one upstream socket (so each DTLS session keeps its address)."""

    def __init__(self, link: UdpLink, client: Address) -> None:
        self.link = link
        self.client = client
        self.upstream: asyncio.DatagramTransport | None = None
        self.backlog: list[bytes] = []
        self.up = _Direction(link.relay, link.traffic.up, self._to_server)
        self.down = _Direction(link.relay, link.traffic.down, self._to_client)
        self.up.reverse, self.down.reverse = self.down, self.up
        self.opening = asyncio.ensure_future(self._open())

    async def _open(self) -> None:
        loop = self.link.relay.loop
        try:
            self.upstream, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(lambda data, _addr: self.down.submit(data)),
                remote_addr=self.link.relay.upstream,
            )
        except OSError:
            self.backlog.clear()
            return
        for data in self.backlog:
            self.upstream.sendto(data)
        self.backlog.clear()

    def _to_server(self, data: bytes) -> None:
        if self.upstream is None:
            if not self.opening.done():
                self.backlog.append(data)
        elif not self.upstream.is_closing():
            self.upstream.sendto(data)

    def _to_client(self, data: bytes) -> None:
        listener = self.link.listener
        if listener is not None and not listener.is_closing():
            listener.sendto(data, self.client)

    def close(self) -> None:
        self.up.close()
        self.down.close()
        self.opening.cancel()
        if self.upstream is not None:
            self.upstream.close()


class UdpLink:
    """A device's private way to the server: connect to `.address` instead of the server."""

    def __init__(self, relay: UdpRelay) -> None:
        self.relay = relay
        self.traffic = Traffic()
        self.listener: asyncio.DatagramTransport | None = None
        self.flows: dict[Address, _Flow] = {}
        self.address: Address = ("", 0)

    async def open(self) -> UdpLink:
        self.listener, _ = await self.relay.loop.create_datagram_endpoint(
            lambda: _Protocol(self._from_client), local_addr=(self.relay.host, 0)
        )
        self.address = self.listener.get_extra_info("sockname")[:2]
        return self

    def _from_client(self, data: bytes, addr: Address) -> None:
        flow = self.flows.get(addr)
        if flow is None:
            flow = self.flows[addr] = _Flow(self, addr)
        flow.up.submit(data)

    async def close(self) -> None:
        for flow in self.flows.values():
            flow.close()
        self.flows.clear()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self.relay.closed(self)


class UdpRelay:
    """Makes links to one UDP server and keeps the totals of the links it closed."""

    def __init__(
        self,
        upstream: Address,
        impairment: Impairment = Impairment(),
        *,
        seed: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.upstream = upstream
        self.impairment = impairment
        self.rng = random.Random(seed)
        self.host = host
        self.loop = asyncio.get_running_loop()
        self.totals = Traffic()
        self.links_open = 0

    async def open_link(self) -> UdpLink:
        link = await UdpLink(self).open()
        self.links_open += 1
        return link

    def closed(self, link: UdpLink) -> None:
        self.links_open -= 1
        self.totals.add(link.traffic)


# ---- TCP (https://) ----------------------------------------------------------------------


class TcpLink:
    """Counts the TLS bytes of a device's connections; applies no impairment."""

    def __init__(self, relay: TcpRelay) -> None:
        self.relay = relay
        self.traffic = Traffic()
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.Task[None]] = set()
        self.address: Address = ("", 0)

    async def open(self) -> TcpLink:
        self.server = await asyncio.start_server(self._accepted, self.relay.host, 0)
        self.address = self.server.sockets[0].getsockname()[:2]
        return self

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.relay.upstream)
        except OSError:
            writer.close()  # the device sees its connection end, as with a dead server
            return
        sock = up_writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipes = [
            asyncio.ensure_future(_pipe(reader, up_writer, self.traffic.up)),
            asyncio.ensure_future(_pipe(up_reader, writer, self.traffic.down)),
        ]
        self.pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
                self.pipes.discard(task)
            for w in (writer, up_writer):
                w.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for task in list(self.pipes):
            task.cancel()
        if self.pipes:
            await asyncio.gather(*self.pipes, return_exceptions=True)
        self.relay.closed(self)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, c: Counters) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            c.datagrams += 1
            c.bytes += len(data)
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()


class TcpRelay:
    """Makes counting links to one TCP server (impairments are for UDP only)."""

    def __init__(self, upstream: Address, *, host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.totals = Traffic()
        self.links_open = 0

    async def open_link(self) -> TcpLink:
        link = await TcpLink(self).open()
        self.links_open += 1
        return link

    def closed(self, link: TcpLink) -> None:
        self.links_open -= 1
        self.totals.add(link.traffic)
