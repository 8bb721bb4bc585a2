"""EST-coaps enrollment benchmark: full enrollments/s, server CPU per enrollment, bytes on the wire.

* Rate: every enrollment is a device with its own IDevID (P-256) opening a NEW DTLS session
  and sending one sen. The server (`estcoap serve --coaps`, LocalCA + SQLite store) runs in
  its own process; the devices run in a pool of client processes (sans-IO DTLS associations
  on raw UDP sockets, CoAP messages encoded by aiocoap), everything prepared before the
  clock starts. Server CPU is utime+stime from /proc/PID/stat around the timed phase.
* Bytes: our EstClient does crts + sen over one new DTLS session through a UDP relay that
  counts every datagram both ways and sorts DTLS records by content type. The floor is the
  measured handshake + the payloads + minimal CoAP headers; the same enrollment over HTTPS
  (`estcoap serve --https`, EstClient https) goes through a TCP relay for comparison.

    python3 bench/coaps_enroll.py [--enrollments 600] [--concurrency 1 8 32] [--procs 2]
                                  [--bytes-runs 20] [--profile] [--profile-out PATH]
                                  [--server-chain leaf]

Loopback, one machine: clients and server share the cores, so rates are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _dtls import close, flush, handshake  # noqa: E402
from _serve import CLI, Served, cpu_seconds, start_serve  # noqa: E402
from aiocoap import Message  # noqa: E402
from aiocoap.numbers.codes import Code  # noqa: E402
from aiocoap.numbers.types import Type  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from estcoap.ca import init_ca  # noqa: E402
from estcoap.client import EstClient  # noqa: E402
from estcoap.client.https_transport import client_ssl_context  # noqa: E402
from estcoap.client.transport import ClientTransport  # noqa: E402
from estcoap.codec import b64  # noqa: E402
from estcoap.codec.pkcs10 import build_csr  # noqa: E402
from estcoap.dtls import DtlsClientConfig  # noqa: E402
from estcoap.dtls.association import (  # noqa: E402
    ApplicationData,
    State,
    check_server_name,
)
from estcoap.dtls.contexts import client_context  # noqa: E402
from estcoap.idevid import DeviceMaker  # noqa: E402

IP_UDP_HEADERS = 28  # IPv4 20 + UDP 8 per datagram (IPv6 would be 48)
EST = (".well-known", "est")
PEM = serialization.Encoding.PEM


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def main_thread_cpu(pid: int) -> float:
    """The event-loop thread alone (DTLS, CoAP, sockets and, unless commits are durable, the
    CA); the rest is worker threads (server-side key generation, durable commits)."""
    return cpu_seconds(pid, thread=pid)


# -- devices (client side) ------------------------------------------------------------------


@dataclass
class Device:
    ctx: object  # SSL.Context holding this device's IDevID
    csr: bytes


def make_devices(
    count: int, maker_cert: bytes, maker_key: bytes, ca_pem: bytes, tag: str
) -> list[Device]:
    maker = DeviceMaker(
        x509.load_pem_x509_certificate(maker_cert),
        serialization.load_pem_private_key(maker_key, None),  # type: ignore[arg-type]
    )
    ca = x509.load_pem_x509_certificate(ca_pem)
    devices = []
    for n in range(count):
        cert, key = maker.issue_idevid(f"{tag}-{n}")
        config = DtlsClientConfig(trust_anchors=[ca], certificate_chain=[cert], private_key=key)
        op_key = ec.generate_private_key(ec.SECP256R1())
        # the IDevID's identity (serialNumber), which the CA's issuance policy requires
        csr = build_csr(op_key, x509.Name.from_rfc4514_string(f"2.5.4.5={tag}-{n}"))
        devices.append(Device(client_context(config, check_server_name), csr))
    return devices


async def enroll_once(device: Device, server: tuple[str, int]) -> bool:
    """New DTLS session, POST sen, close_notify. True when the answer was 2.04 + a PKCS#7."""
    loop = asyncio.get_running_loop()
    sock, assoc = await handshake(device.ctx, server)
    try:
        if assoc.state is not State.ESTABLISHED:
            return False
        token = secrets.token_bytes(2)
        request = Message(
            mtype=Type.CON,
            mid=secrets.randbelow(65536),
            token=token,
            code=Code.POST,
            payload=device.csr,
        )
        request.opt.uri_path = (*EST, "sen")
        request.opt.content_format = 286
        encoded = request.encode()
        for _attempt in range(4):  # CON retransmission (RFC 7252 s4.2), 2 s apart here
            assoc.send(encoded)
            flush(sock, assoc)
            deadline = loop.time() + 2.0
            while loop.time() < deadline:
                try:
                    data = await asyncio.wait_for(
                        loop.sock_recv(sock, 4096), deadline - loop.time()
                    )
                except TimeoutError:
                    break
                for event in assoc.receive_datagram(data):
                    if not isinstance(event, ApplicationData):
                        continue
                    response = Message.decode(event.data)
                    if response.mtype is Type.CON:  # a separate response: acknowledge it
                        ack = Message(mtype=Type.ACK, mid=response.mid, code=Code.EMPTY)
                        assoc.send(ack.encode())
                        flush(sock, assoc)
                    if response.code is Code.EMPTY or response.token != token:
                        continue  # an empty ACK: the answer follows separately
                    return response.code == Code.CHANGED and response.payload[:1] == b"\x30"
        return False
    finally:
        close(sock, assoc)


async def _run_devices(devices: list[Device], server: tuple[str, int], concurrency: int) -> int:
    queue = list(reversed(devices))
    ok = 0

    async def worker() -> None:
        nonlocal ok
        while queue:
            success = await enroll_once(queue.pop(), server)  # not `ok += await`: that reads
            ok += success  # ok before the await and loses the other workers' counts

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


def client_process(
    conn,
    server: tuple[str, int],
    count: int,
    concurrency: int,
    maker_cert: bytes,
    maker_key: bytes,
    ca_pem: bytes,
    tag: str,
) -> None:
    devices = make_devices(count, maker_cert, maker_key, ca_pem, tag)
    conn.send("ready")
    conn.recv()  # go
    start = time.perf_counter()
    ok = asyncio.run(_run_devices(devices, server, concurrency))
    conn.send((ok, time.perf_counter() - start))


@dataclass
class RateResult:
    concurrency: int
    enrollments: int
    ok: int
    seconds: float
    server_cpu: float
    loop_cpu: float  # of server_cpu: the event-loop thread


def measure_rate(
    server: Served,
    total: int,
    concurrency: int,
    procs: int,
    maker: tuple[bytes, bytes],
    ca_pem: bytes,
    tag: str,
) -> RateResult:
    procs = max(1, min(procs, concurrency))
    shares = [total // procs + (1 if i < total % procs else 0) for i in range(procs)]
    per_proc = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    spawn = mp.get_context("spawn")
    pipes, workers = [], []
    for i in range(procs):
        parent, child = spawn.Pipe()
        proc = spawn.Process(
            target=client_process,
            args=(
                child,
                ("127.0.0.1", server.port),
                shares[i],
                per_proc[i],
                *maker,
                ca_pem,
                f"{tag}-p{i}",
            ),
            daemon=True,
        )
        proc.start()
        pipes.append(parent)
        workers.append(proc)
    try:
        for pipe in pipes:
            pipe.recv()  # ready: devices, IDevIDs and CSRs made
        cpu_before = cpu_seconds(server.pid)
        loop_before = main_thread_cpu(server.pid)
        start = time.perf_counter()
        for pipe in pipes:
            pipe.send("go")
        results = [pipe.recv() for pipe in pipes]
        elapsed = time.perf_counter() - start
        cpu = cpu_seconds(server.pid) - cpu_before
        loop_cpu = main_thread_cpu(server.pid) - loop_before
    finally:
        for proc in workers:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
    return RateResult(concurrency, total, sum(r[0] for r in results), elapsed, cpu, loop_cpu)


# -- relays that count bytes ----------------------------------------------------------------

CONTENT_TYPES = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data"}
HANDSHAKE_TYPES = {
    1: "ClientHello",
    2: "ServerHello",
    3: "HelloVerifyRequest",
    11: "Certificate",
    12: "ServerKeyExchange",
    13: "CertificateRequest",
    14: "ServerHelloDone",
    15: "CertificateVerify",
    16: "ClientKeyExchange",
}


@dataclass
class Flow:
    datagrams: list[int] = field(default_factory=lambda: [0, 0])  # [up, down]
    payload: list[int] = field(default_factory=lambda: [0, 0])
    by_type: dict[str, int] = field(default_factory=dict)  # DTLS record bytes, both ways
    app_records: list[tuple[int, int]] = field(default_factory=list)  # (direction, record len)
    # handshake record bytes per "client ClientHello" etc.; epoch 1 is the encrypted Finished
    by_message: dict[str, int] = field(default_factory=dict)

    def count(self, direction: int, datagram: bytes) -> None:
        self.datagrams[direction] += 1
        self.payload[direction] += len(datagram)
        offset = 0
        while offset + 13 <= len(datagram):
            kind = datagram[offset]
            length = int.from_bytes(datagram[offset + 11 : offset + 13], "big")
            name = CONTENT_TYPES.get(kind, f"type {kind}")
            self.by_type[name] = self.by_type.get(name, 0) + 13 + length
            if kind == 23:
                self.app_records.append((direction, length))
            if kind == 22:
                self._count_messages(direction, datagram[offset : offset + 13 + length])
            offset += 13 + length

    def _count_messages(self, direction: int, record: bytes) -> None:
        """A plaintext record may hold several handshake messages (RFC 6347 s4.2.3): each
        counts its own 12-byte header + body, the first also the 13-byte record header."""
        side = ("client", "server")[direction]
        if int.from_bytes(record[3:5], "big") != 0:
            self.by_message[f"{side} Finished"] = self.by_message.get(f"{side} Finished", 0) + len(
                record
            )
            return
        pos, extra = 13, 13
        while pos + 12 <= len(record):
            size = 12 + int.from_bytes(record[pos + 9 : pos + 12], "big")
            key = f"{side} {HANDSHAKE_TYPES.get(record[pos], 'other')}"
            self.by_message[key] = self.by_message.get(key, 0) + size + extra
            pos, extra = pos + size, 0


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, relay: UdpRelay, client: tuple[str, int]) -> None:
        self.relay, self.client = relay, client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.relay.flows[self.client].count(1, data)
        self.relay.downstream.sendto(data, self.client)


class UdpRelay(asyncio.DatagramProtocol):
    """client <-> relay <-> server; one upstream socket per client address (a flow)."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.flows: dict[tuple[str, int], Flow] = {}
        self._upstreams: dict[tuple[str, int], asyncio.Future[asyncio.DatagramTransport]] = {}
        self.downstream: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.downstream = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr not in self._upstreams:
            self.flows[addr] = Flow()
            loop = asyncio.get_running_loop()
            self._upstreams[addr] = asyncio.ensure_future(
                loop.create_datagram_endpoint(
                    lambda: _Upstream(self, addr), remote_addr=self.server
                )
            )  # type: ignore[arg-type]
        self.flows[addr].count(0, data)
        self._upstreams[addr].add_done_callback(lambda fut: fut.result()[0].sendto(data))

    async def close(self) -> None:
        for fut in self._upstreams.values():
            (await fut)[0].close()
        self.downstream.close()


class TcpRelay:
    """Counts TCP payload bytes per connection, both ways."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.flows: list[list[int]] = []  # [up, down] per connection

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counts = [0, 0]
        self.flows.append(counts)
        up_reader, up_writer = await asyncio.open_connection(*self.server)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, i: int) -> None:
            try:
                while data := await src.read(65536):
                    counts[i] += len(data)
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, 0), pump(up_reader, writer, 1))


# -- bytes per enrollment ---------------------------------------------------------------------


@dataclass
class WireResult:
    label: str
    up: int
    down: int
    datagrams: int
    handshake: int = 0
    alerts: int = 0
    app_records: int = 0
    app_record_bytes: int = 0
    floor: int = 0
    handshake_messages: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.up + self.down


@dataclass(frozen=True)
class Call:
    """One EST exchange as our client saw it (binary DER sizes, before any base64)."""

    operation: str
    request_body: int
    accept: int | None
    reply_body: int
    reply_format: int | None


class RecordingTransport:
    """A ClientTransport that forwards to the real one and notes each exchange."""

    def __init__(self, inner: ClientTransport, calls: list[Call]) -> None:
        self.inner, self.calls = inner, calls

    async def call(self, spec, label, body, accept=None):  # type: ignore[no-untyped-def]
        reply = await self.inner.call(spec, label, body, accept)
        self.calls.append(
            Call(
                spec.short_name or spec.long_name,
                len(body or b""),
                int(accept) if accept is not None else None,
                len(reply.body),
                int(reply.content_format) if reply.content_format is not None else None,
            )
        )
        return reply

    async def tls_unique(self) -> bytes | None:
        return await self.inner.tls_unique()

    async def close(self) -> None:
        await self.inner.close()


class RecordingClient(EstClient):
    def __init__(self, *args, calls: list[Call], **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.calls = calls

    def _new_transport(self, *, verify: bool = True) -> ClientTransport:
        return RecordingTransport(super()._new_transport(verify=verify), self.calls)  # type: ignore[return-value]


async def enroll_through(
    url: str, ca_pem: Path, maker: DeviceMaker, root: Path, name: str
) -> list[Call]:
    """One device: cacerts then simpleenroll on one new secure session, via our EstClient."""
    cert, key = maker.issue_idevid(name)
    (root / "dev.pem").write_bytes(cert.public_bytes(PEM))
    (root / "dev.key").write_bytes(pem_key(key))
    csr = build_csr(
        ec.generate_private_key(ec.SECP256R1()), x509.Name.from_rfc4514_string(f"2.5.4.5={name}")
    )
    calls: list[Call] = []
    async with RecordingClient(
        url,
        trust=ca_pem,
        cert=root / "dev.pem",
        key=root / "dev.key",
        server_name="127.0.0.1",
        single_certificate=True,  # sen answered with the issued certificate alone (287)
        calls=calls,
    ) as est:
        await est.cacerts()
        await est.enroll(csr)
    await asyncio.sleep(0.05)  # the close_notify crosses the relay
    return calls


def coap_floor(call: Call) -> int:
    """Request + response with nothing optional: 4-byte header, a 1-byte token, the options
    they need (the Uri-Path of the long form, Content-Format, Accept when one was asked),
    the payload marker and the payload."""
    path = (*EST, call.operation)
    request = 4 + 1 + sum(1 + len(segment) for segment in path)
    if call.request_body:
        request += 3 + 1 + call.request_body  # Content-Format 286 (2-byte value)
    if call.accept is not None:
        request += 1 + (1 if call.accept < 256 else 2)
    response = 4 + 1 + 3 + 1 + call.reply_body  # Content-Format 281/285/287
    return request + response


def _mean(values: list[int] | list[float]) -> int:
    return round(statistics.mean(values))


async def coaps_bytes(
    server: Served, ca_pem: Path, maker: DeviceMaker, root: Path, runs: int
) -> tuple[WireResult, list[Call], float]:
    loop = asyncio.get_running_loop()
    relay = UdpRelay(("127.0.0.1", server.port))
    transport, _ = await loop.create_datagram_endpoint(lambda: relay, local_addr=("127.0.0.1", 0))
    url = f"coaps://127.0.0.1:{transport.get_extra_info('sockname')[1]}/.well-known/est"
    cpu_before = cpu_seconds(server.pid)
    calls = [await enroll_through(url, ca_pem, maker, root, f"coaps-{n}") for n in range(runs)]
    cpu_ms = (cpu_seconds(server.pid) - cpu_before) / runs * 1000
    await relay.close()
    flows = list(relay.flows.values())
    assert len(flows) == runs, f"{len(flows)} flows for {runs} enrollments"
    result = WireResult(
        "EST-coaps (DTLS 1.2, CCM_8)",
        up=_mean([f.payload[0] for f in flows]),
        down=_mean([f.payload[1] for f in flows]),
        datagrams=_mean([sum(f.datagrams) for f in flows]),
        handshake=_mean(
            [f.by_type.get("handshake", 0) + f.by_type.get("change_cipher_spec", 0) for f in flows]
        ),
        alerts=_mean([f.by_type.get("alert", 0) for f in flows]),
        app_records=_mean([len(f.app_records) for f in flows]),
        app_record_bytes=_mean([f.by_type.get("application_data", 0) for f in flows]),
    )
    result.floor = result.handshake + _mean([sum(map(coap_floor, run)) for run in calls])
    for key in flows[0].by_message:
        result.handshake_messages[key] = _mean([f.by_message.get(key, 0) for f in flows])
    return result, calls[-1], cpu_ms


async def https_bytes(
    server: Served, ca_pem: Path, maker: DeviceMaker, root: Path, runs: int
) -> tuple[WireResult, list[Call], float]:
    relay = TcpRelay(("127.0.0.1", server.port))
    listener = await asyncio.start_server(relay.handle, "127.0.0.1", 0)
    url = f"https://127.0.0.1:{listener.sockets[0].getsockname()[1]}/.well-known/est"
    cpu_before = cpu_seconds(server.pid)
    calls = [await enroll_through(url, ca_pem, maker, root, f"https-{n}") for n in range(runs)]
    cpu_ms = (cpu_seconds(server.pid) - cpu_before) / runs * 1000
    flows, relay.flows = relay.flows, []
    # The same TLS handshake (same kind of client identity, same anchors) with no HTTP in it.
    cert, key = maker.issue_idevid("https-bare")
    ctx = client_ssl_context(
        trust=[x509.load_pem_x509_certificate(ca_pem.read_bytes())], cert_chain=[cert], key=key
    )
    for _ in range(3):
        _, writer = await asyncio.open_connection(
            "127.0.0.1", listener.sockets[0].getsockname()[1], ssl=ctx, server_hostname="127.0.0.1"
        )
        await asyncio.sleep(0.05)  # TLS 1.3 session tickets arrive after the handshake
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.05)
    listener.close()
    assert len(flows) == runs, f"{len(flows)} TCP connections for {runs} enrollments"
    result = WireResult(
        "EST over HTTPS (TLS, keep-alive)",
        up=_mean([f[0] for f in flows]),
        down=_mean([f[1] for f in flows]),
        datagrams=0,
        handshake=_mean([sum(f) for f in relay.flows]),
    )
    return result, calls[-1], cpu_ms


# -- the report -------------------------------------------------------------------------------


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def print_profile(path: Path, top: int = 18) -> None:
    import pstats

    print(f"\nserver profile: event-loop thread CPU time, top {top} by own time ({path})")
    print("(cProfile does not follow worker threads; it slows Python code ~2x)")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(top)


def payloads(calls: list[Call]) -> str:
    return " / ".join(
        f"{c.operation} {c.request_body}->{c.reply_body} ({c.reply_format})" for c in calls
    )


def report(args: argparse.Namespace, rates: list[RateResult], coaps: tuple, https: tuple) -> None:  # type: ignore[type-arg]
    (wire, wire_calls, coaps_cpu), (http_wire, http_calls, https_cpu) = coaps, https
    print("EST-coaps full enrollments (new DTLS session with its own P-256 IDevID + one sen)")
    rows = [
        (
            "concurrent devices",
            "enrollments",
            "ok",
            "enrollments/s",
            "server CPU/enroll",
            "event loop",
            "other threads",
        )
    ]
    for r in rates:
        per = 1000 / max(r.ok, 1)
        rows.append(
            (
                str(r.concurrency),
                str(r.enrollments),
                str(r.ok),
                f"{r.ok / r.seconds:.0f}",
                f"{r.server_cpu * per:.2f} ms",
                f"{r.loop_cpu * per:.2f} ms",
                f"{(r.server_cpu - r.loop_cpu) * per:.2f} ms",
            )
        )
    print(table(rows))
    all_cpu = sum(r.server_cpu for r in rates) / max(sum(r.ok for r in rates), 1) * 1000
    print(
        f"(server: estcoap serve --coaps, own process; clients: {args.procs} processes; "
        f"{os.cpu_count()} cores shared by all)"
    )

    print(
        f"\nBytes per enrollment: crts + sen on one new session, our EstClient "
        f"(mean of {args.bytes_runs})"
    )
    print(
        table(
            [
                ("", "up", "down", "total", "datagrams", "+IP/UDP hdrs"),
                (
                    wire.label,
                    str(wire.up),
                    str(wire.down),
                    str(wire.total),
                    str(wire.datagrams),
                    str(wire.total + wire.datagrams * IP_UDP_HEADERS),
                ),
                (
                    http_wire.label,
                    str(http_wire.up),
                    str(http_wire.down),
                    str(http_wire.total),
                    "-",
                    "(TCP payload only)",
                ),
            ]
        )
    )
    coap_part = wire.floor - wire.handshake
    print()
    print(
        table(
            [
                ("where the EST-coaps bytes go", "bytes"),
                (
                    "DTLS handshake records (HelloVerifyRequest round, CCS, Finished included)",
                    str(wire.handshake),
                ),
                *((f"  {name}", str(size)) for name, size in wire.handshake_messages.items()),
                (
                    f"application records ({wire.app_records}, each 29 B of DTLS header+nonce+tag)",
                    str(wire.app_record_bytes),
                ),
                (
                    f"  of which payloads + minimal CoAP headers ({payloads(wire_calls)})",
                    str(coap_part),
                ),
                (
                    "  of which above that floor (DTLS record overhead, longer tokens, options)",
                    str(wire.app_record_bytes - coap_part),
                ),
                ("alerts (close_notify both ways)", str(wire.alerts)),
                ("floor = handshake + payloads + minimal CoAP headers", str(wire.floor)),
            ]
        )
    )
    bodies = sum(
        len(b64.encode(b"\0" * n)) for c in http_calls for n in (c.request_body, c.reply_body) if n
    )
    print()
    print(
        table(
            [
                ("where the HTTPS bytes go", "bytes"),
                (
                    "TLS handshake + session tickets + close (a bare connection, same identity)",
                    str(http_wire.handshake),
                ),
                (f"base64 bodies ({payloads(http_calls)} as DER)", str(bodies)),
                (
                    "HTTP headers + TLS record overhead (the rest)",
                    str(http_wire.total - http_wire.handshake - bodies),
                ),
            ]
        )
    )
    print(
        f"\nserver CPU per sequential enrollment incl. crts (few runs, 10 ms ticks): "
        f"coaps {coaps_cpu:.1f} ms, https {https_cpu:.1f} ms"
    )

    ratio = wire.total / wire.floor
    vs_https = wire.total / http_wire.total
    print("\nTargets")
    print(
        table(
            [
                ("target", "measured", ""),
                (
                    "server CPU per full enrollment <= 3.4 ms (all levels)",
                    f"{all_cpu:.2f} ms",
                    verdict(all_cpu <= 3.4),
                ),
                (
                    "crts+sen bytes within 15% of the floor",
                    f"{(ratio - 1) * 100:+.1f}%",
                    verdict(ratio <= 1.15),
                ),
                ("under half the HTTPS bytes", f"{vs_https:.3f} x HTTPS", verdict(vs_https < 0.5)),
            ]
        )
    )


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="coaps-bench-") as tmp:
        run(args, Path(tmp))


def run(args: argparse.Namespace, scratch: Path) -> None:
    paths = init_ca(scratch / "ca", ["127.0.0.1", "localhost"])
    if args.server_chain == "leaf":
        # What-if: the servers send only their own certificate; the CA certificate is the
        # clients' trust anchor already (RFC 5246 s7.4.2 lets the root be left out).
        leaf = x509.load_pem_x509_certificates(paths.server_cert.read_bytes())[0]
        paths.server_cert.write_bytes(leaf.public_bytes(PEM))
    maker = DeviceMaker.create()
    maker_pem = scratch / "maker.pem"
    maker_pem.write_bytes(maker.certificate.public_bytes(PEM))
    maker_blobs = (maker.certificate.public_bytes(PEM), pem_key(maker.private_key))
    ca_pem = paths.ca_cert.read_bytes()
    profile = None
    if args.profile or args.profile_out:
        profile = Path(args.profile_out).resolve() if args.profile_out else scratch / "coaps.prof"

    trusting = ["--trust-clients", str(maker_pem), *args.serve_arg]
    # profiled: this file runs the CLI under cProfile (see cli_entry)
    cli = CLI if profile is None else (sys.executable, __file__, "--cli", str(profile))
    server = start_serve(paths.dir, ("coaps",), trusting, cli=cli)
    rates: list[RateResult] = []
    try:
        measure_rate(server, 40, 4, args.procs, maker_blobs, ca_pem, "warm")
        for c in args.concurrency:
            rates.append(
                measure_rate(server, args.enrollments, c, args.procs, maker_blobs, ca_pem, f"c{c}")
            )
        coaps = asyncio.run(coaps_bytes(server, paths.ca_cert, maker, scratch, args.bytes_runs))
    finally:
        server.stop()
    server = start_serve(paths.dir, ("https",), trusting)
    try:
        https = asyncio.run(https_bytes(server, paths.ca_cert, maker, scratch, args.bytes_runs))
    finally:
        server.stop()
    report(args, rates, coaps, https)
    if profile is not None and profile.exists():
        print_profile(profile)


def cli_entry(profile: str, argv: list[str]) -> None:
    """Run the estcoap CLI under cProfile timed by the thread's own CPU clock, so the
    figures are CPU (not wall) time of the event-loop thread; stats go to `profile`."""
    import cProfile

    from estcoap.cli import main as cli_main

    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    try:
        cli_main(argv)
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--cli":
        cli_entry(sys.argv[2], sys.argv[3:])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enrollments", type=int, default=600, help="per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--bytes-runs", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="cProfile the coaps server")
    parser.add_argument(
        "--profile-out", metavar="PATH", help="cProfile the coaps server and keep the stats here"
    )
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for `estcoap serve` (repeatable), e.g. --serve-arg=--metrics "
        "--serve-arg=127.0.0.1:0 to measure what the metrics cost",
    )
    parser.add_argument(
        "--server-chain",
        choices=("full", "leaf"),
        default="full",
        help="full: server.pem as 'ca init' writes it (leaf + CA); leaf: the leaf alone (note:"
        " OpenSSL's auto-chain re-adds the CA from the client-trust store unless the DTLS"
        " context sets SSL_MODE_NO_AUTO_CHAIN)",
    )
    main(parser.parse_args())
