"""A fleet of virtual devices, each provisioned end to end through its own relay link.

Devices are made lazily: a worker takes the next index, creates the device's key and
IDevID, runs crts/att/sen (and sren with a second DTLS session authenticated by the
certificate just issued), closes everything and keeps only a small outcome record.
Memory therefore grows with the concurrency, not with the number of devices.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509

from ..client import EstClient
from ..client.api import EstClientError, EstPendingTimeout
from ..idevid import DeviceMaker
from .relay import Impairment, TcpRelay, Traffic, UdpRelay

DEFAULT_PORTS = {"coaps": 5684, "https": 443}


@dataclass(frozen=True)
class FleetSettings:
    url: str
    trust: Sequence[x509.Certificate]
    maker: DeviceMaker
    devices: int
    concurrency: int
    impairment: Impairment = Impairment()
    block_size: int | None = None
    reenroll: bool = False
    timeout: float = 60.0  # per EST request; also bounds each DTLS handshake
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.devices < 1:
            raise ValueError("devices must be at least 1")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        scheme = urlsplit(self.url).scheme
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"not a coaps:// or https:// URL: {self.url}")
        if scheme == "https" and self.impairment.active:
            raise ValueError("loss, duplication, reordering and delay apply to coaps:// (UDP) only")

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme


@dataclass(slots=True)
class DeviceOutcome:
    index: int
    ok: bool
    reason: str | None  # a short failure class, None on success
    detail: str  # the one-line error text, "" on success
    started: float  # seconds since the run started
    latency: float  # seconds, from the first datagram to the last answer
    traffic: Traffic


@dataclass
class FleetResult:
    settings: FleetSettings
    outcomes: list[DeviceOutcome]
    wall_time: float
    totals: Traffic
    run_tag: str
    extra: dict[str, object] = field(default_factory=dict)


def failure_reason(exc: BaseException) -> str:
    """A stable, short class for a device's failure, from the whole cause chain."""
    from ..client.coaps_transport import CoapsTransportError
    from ..dtls.errors import ConnectionClosed, HandshakeFailed, HandshakeTimeout, PeerNameMismatch

    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for cause in chain:  # the most specific cause wins
        if isinstance(cause, HandshakeTimeout):
            return "dtls-handshake-timeout"
        if isinstance(cause, PeerNameMismatch):
            return "server-name-mismatch"
        if isinstance(cause, HandshakeFailed):
            return "dtls-handshake-failed"
        if isinstance(cause, ConnectionRefusedError):
            return "connection-refused"
        if isinstance(cause, ConnectionClosed | ConnectionResetError | BrokenPipeError):
            return "connection-closed"
    if isinstance(exc, EstPendingTimeout):
        return "pending-timeout"
    if isinstance(exc, EstClientError) and exc.status:
        return f"rejected-{exc.status}"
    text = str(exc)
    if isinstance(exc, EstClientError):
        if "no answer" in text or "timed out" in text or "Timeout" in text:
            return "timeout"
        if "not trusted" in text:
            return "server-untrusted"
        if "cannot connect" in text:
            return "cannot-connect"
        if "undecodable" in text or "no certificate for our key" in text:
            return "bad-answer"
        if any(isinstance(c, CoapsTransportError | OSError) for c in chain):
            return "transport-error"
    if any(isinstance(c, TimeoutError) for c in chain):
        return "timeout"
    return type(chain[-1]).__name__


class Fleet:
    """Runs `settings.devices` virtual devices, at most `settings.concurrency` at a time."""

    def __init__(
        self,
        settings: FleetSettings,
        *,
        on_outcome: Callable[[DeviceOutcome], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_outcome = on_outcome
        self.run_tag = secrets.token_hex(3)
        parts = urlsplit(settings.url)
        self._parts = parts
        self.server_name = parts.hostname or ""
        self.port = parts.port or DEFAULT_PORTS[settings.scheme]
        self.outcomes: list[DeviceOutcome] = []

    def _upstream(self) -> tuple[str, int]:
        """The server's address, resolved once (the relay forwards to an address)."""
        family = socket.AF_UNSPEC
        kind = socket.SOCK_DGRAM if self.settings.scheme == "coaps" else socket.SOCK_STREAM
        infos = socket.getaddrinfo(self.server_name, self.port, family, kind)
        if not infos:
            raise OSError(f"cannot resolve {self.server_name}")
        return infos[0][4][:2]

    def _link_url(self, address: tuple[str, int]) -> str:
        host, port = address
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return urlunsplit((self._parts.scheme, netloc, self._parts.path, "", ""))

    async def run(self) -> FleetResult:
        s = self.settings
        upstream = self._upstream()
        relay_host = "::1" if ":" in upstream[0] else "127.0.0.1"
        relay: UdpRelay | TcpRelay
        if s.scheme == "coaps":
            relay = UdpRelay(upstream, s.impairment, seed=s.seed, host=relay_host)
        else:
            relay = TcpRelay(upstream, host=relay_host)
        indices = iter(range(s.devices))
        start = time.monotonic()

        async def worker() -> None:
            for index in indices:  # one shared iterator: each index is taken once
                outcome = await self._device(relay, index, start)
                self.outcomes.append(outcome)
                if self.on_outcome is not None:
                    self.on_outcome(outcome)

        await asyncio.gather(*(worker() for _ in range(min(s.concurrency, s.devices))))
        wall = time.monotonic() - start
        self.outcomes.sort(key=lambda o: o.index)
        return FleetResult(s, self.outcomes, wall, relay.totals, self.run_tag)

    def _client(self, url: str, cert: Sequence[x509.Certificate], key: object) -> EstClient:
        s = self.settings
        return EstClient(
            url,
            trust=s.trust,
            cert=cert,
            key=key,  # type: ignore[arg-type]
            timeout=s.timeout,
            server_name=self.server_name,
            block_size=s.block_size,
            handshake_timeout=s.timeout if s.scheme == "coaps" else None,
        )

    async def _device(self, relay: UdpRelay | TcpRelay, index: int, start: float) -> DeviceOutcome:
        serial = f"sim-{self.run_tag}-{index:06d}"
        idevid, key = self.settings.maker.issue_idevid(serial)
        link = await relay.open_link()
        began = time.monotonic()
        ok, reason, detail = True, None, ""
        try:
            url = self._link_url(link.address)
            async with self._client(url, [idevid], key) as est:
                provisioned = await est.provision(f"CN={serial}")
            if self.settings.reenroll:
                # sren on a new session authenticated by the certificate just issued
                async with self._client(url, provisioned.chain, provisioned.private_key) as est:
                    await est.reenroll()
        except Exception as exc:  # every failure is counted, none stops the run
            ok, reason, detail = False, failure_reason(exc), _one_line(exc)
        finished = time.monotonic()
        await link.close()
        return DeviceOutcome(
            index, ok, reason, detail, began - start, finished - began, link.traffic
        )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
