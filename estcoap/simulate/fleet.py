"""A fleet of virtual devices, each provisioned end to end through its own relay link.

Devices are made lazily: a worker takes the next index, creates the device's key and
IDevID, runs crts/att/sen (and sren with a second DTLS session authenticated by the
certificate just issued), closes everything and keeps only a small outcome record.
Memory therefore grows with the concurrency, not with the number of devices.

A PSK fleet (psk_devices) has no IDevIDs: device i enrolls over PSK DTLS with the i-th
(identity, key), for the subject serialNumber=IDENTITY,CN=IDENTITY its key must be bound
to, and re-enrolls (sren) over certificate DTLS at reenroll_url, through a second relay.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509

from ..client import EstClient
from ..client.api import EstClientError, EstPendingTimeout, generate_key
from ..codec.csrattrs import requested_key, requested_signature_hash, wants_challenge_password
from ..codec.keytypes import PrivateKey
from ..idevid import DeviceMaker
from .keys import Credential
from .plan import Plan, subject_for
from .relay import Impairment, TcpLink, TcpRelay, Traffic, UdpLink, UdpRelay

DEFAULT_PORTS = {"coaps": 5684, "https": 443}
# Failures a device retries (on a fresh session): the network's doing, not the server's "no".
TRANSIENT = frozenset(
    {
        "timeout",
        "dtls-handshake-timeout",
        "connection-closed",
        "connection-refused",
        "cannot-connect",
        "transport-error",
    }
)
HANDSHAKE_SHARE = 0.9  # of --timeout, for the DTLS handshake
RETRY_PAUSE = 0.5  # seconds between a failed step and its retry


@dataclass(frozen=True)
class FleetSettings:
    url: str
    trust: Sequence[x509.Certificate]
    maker: DeviceMaker | None  # None for a PSK fleet
    devices: int
    concurrency: int
    impairment: Impairment = Impairment()
    block_size: int | None = None
    reenroll: bool = False
    timeout: float = 60.0  # per EST request; 0.9 of it bounds each DTLS handshake
    retries: int = 2  # per step, after a transient failure
    seed: int | None = None
    ack_timeout: float = 2.0  # CoAP ACK_TIMEOUT (RFC 7252 s4.8), doubled on each retransmission
    # A PSK fleet: one (identity, key) per device, and where sren goes (certificate DTLS).
    psk_devices: Sequence[tuple[str, bytes]] = ()
    reenroll_url: str | None = None

    def __post_init__(self) -> None:
        if self.devices < 1:
            raise ValueError("devices must be at least 1")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.ack_timeout <= 0:
            raise ValueError("ack_timeout must be positive")
        if self.retries < 0:
            raise ValueError("retries must be 0 or more")
        scheme = urlsplit(self.url).scheme
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"not a coaps:// or https:// URL: {self.url}")
        if scheme == "https" and self.impairment.active:
            raise ValueError("loss, duplication, reordering and delay apply to coaps:// (UDP) only")
        if self.psk_devices:
            if scheme != "coaps":
                raise ValueError("a PSK fleet enrolls over coaps:// (PSK DTLS)")
            if len(self.psk_devices) != self.devices:
                raise ValueError("a PSK fleet needs one (identity, key) per device")
            if self.reenroll and urlsplit(self.reenroll_url or "").scheme != "coaps":
                raise ValueError("sren of a PSK fleet needs the certificate DTLS URL (coaps://)")
        elif self.maker is None:
            raise ValueError("the devices need IDevIDs from a maker, or PSKs")

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
    retries: int = 0  # steps repeated after a transient failure
    late: float = 0.0  # seconds its paced start came after its slot (all workers were busy)


@dataclass
class FleetResult:
    settings: FleetSettings
    outcomes: list[DeviceOutcome]
    wall_time: float
    totals: Traffic
    run_tag: str
    retried: dict[str, int] = field(default_factory=dict)  # retries by the failure's class


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


# A device's EST exchanges, given the URL of its link, its retry tally and its links (a
# journey that opens another link adds it there, to be closed and counted with the first).
Journey = Callable[[str, Counter[str], list[UdpLink | TcpLink]], Awaitable[None]]


def _failure(exc: Exception) -> tuple[str, str]:
    return failure_reason(exc), _one_line(exc)


def _renewal_failure(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, LookupError):  # no LDevID from an earlier run to renew
        return "no-ldevid", str(exc)
    return _failure(exc)


class Fleet:
    """Runs `settings.devices` virtual devices, at most `settings.concurrency` at a time."""

    def __init__(
        self,
        settings: FleetSettings,
        *,
        on_outcome: Callable[[DeviceOutcome], None] | None = None,
        plan: Plan | None = None,
        keep_outcomes: bool = True,  # False: on_outcome folds them (a big fleet's memory)
    ) -> None:
        self.settings = settings
        self.on_outcome = on_outcome
        self.plan = plan or Plan()
        self.keep_outcomes = keep_outcomes
        self.run_tag = secrets.token_hex(3)
        parts = urlsplit(settings.url)
        self._parts = parts
        self.server_name = parts.hostname or ""
        self.port = parts.port or DEFAULT_PORTS[settings.scheme]
        self.outcomes: list[DeviceOutcome] = []
        self.retried: Counter[str] = Counter()

    def _upstream(self, name: str | None = None, port: int | None = None) -> tuple[str, int]:
        """The server's address, resolved once (the relay forwards to an address)."""
        family = socket.AF_UNSPEC
        kind = socket.SOCK_DGRAM if self.settings.scheme == "coaps" else socket.SOCK_STREAM
        name = name or self.server_name
        infos = socket.getaddrinfo(name, port or self.port, family, kind)
        if not infos:
            raise OSError(f"cannot resolve {name}")
        host, resolved = infos[0][4][:2]
        return str(host), int(resolved)

    def _link_url(self, address: tuple[str, int], path: str | None = None) -> str:
        host, port = address
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        path = self._parts.path if path is None else path
        return urlunsplit((self._parts.scheme, netloc, path, "", ""))

    async def run(self) -> FleetResult:
        s = self.settings
        upstream = self._upstream()
        relay_host = "::1" if ":" in upstream[0] else "127.0.0.1"
        relay: UdpRelay | TcpRelay
        if s.scheme == "coaps":
            relay = UdpRelay(upstream, s.impairment, seed=s.seed, host=relay_host)
        else:
            relay = TcpRelay(upstream, host=relay_host)
        # A PSK fleet re-enrolls over certificate DTLS, elsewhere: a relay of its own.
        self._sren_relay: UdpRelay | None = None
        if s.psk_devices and s.reenroll and s.reenroll_url:
            parts = urlsplit(s.reenroll_url)
            self._sren_path = parts.path
            sren = self._upstream(parts.hostname, parts.port or DEFAULT_PORTS["coaps"])
            self._sren_relay = UdpRelay(sren, s.impairment, seed=s.seed, host=relay_host)
        plan = self.plan
        indices = iter(range(s.devices) if plan.indices is None else plan.indices)
        start = time.monotonic()

        async def worker() -> None:
            for index in indices:  # one shared iterator: each index is taken once
                late = await plan.pace() if plan.pace is not None else 0.0
                device = self._psk_device if s.psk_devices else self._device
                outcome = await device(relay, index, start)
                outcome.late = late
                if self.keep_outcomes:
                    self.outcomes.append(outcome)
                if self.on_outcome is not None:
                    self.on_outcome(outcome)

        await asyncio.gather(*(worker() for _ in range(min(s.concurrency, s.devices))))
        wall = time.monotonic() - start
        self.outcomes.sort(key=lambda o: o.index)
        totals = relay.totals
        if self._sren_relay is not None:
            totals.add(self._sren_relay.totals)
        return FleetResult(s, self.outcomes, wall, totals, self.run_tag, dict(self.retried))

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
            # a little under the request's bound, so a handshake that never completes is
            # reported as such rather than as the request's timeout
            handshake_timeout=s.timeout * HANDSHAKE_SHARE if s.scheme == "coaps" else None,
            ack_timeout=s.ack_timeout if s.scheme == "coaps" else None,
            single_certificate=self.plan.single_certificate,  # 287 rather than 281
        )

    async def _step(
        self, est: EstClient, call: Callable[[], Awaitable[object]], tally: Counter[str]
    ) -> object:
        """One EST step, repeated on a fresh session after a transient failure, as a
        device would: after a timeout the old session may be gone on the server side."""
        for attempt in range(self.settings.retries + 1):
            try:
                return await call()
            except EstClientError as exc:
                reason = failure_reason(exc)
                if reason not in TRANSIENT or attempt == self.settings.retries:
                    raise
                tally[reason] += 1
                await est.close()
                await asyncio.sleep(RETRY_PAUSE)
        raise AssertionError("unreachable")

    async def _first_enrollment(
        self, est: EstClient, tally: Counter[str], subject: str, *, pop_if_asked: bool
    ) -> tuple[list[x509.Certificate], PrivateKey]:
        """crts, att, sen: a key of the kind the server's CSR attributes ask for, enrolled
        for subject (with proof-of-possession when the server asks and pop_if_asked)."""
        await self._step(est, est.cacerts, tally)
        attrs = await self._step(est, est.csrattrs, tally)
        key = generate_key(requested_key(attrs))  # type: ignore[arg-type]
        chain = await self._step(
            est,
            lambda: est.enroll(
                key=key,
                subject=subject,
                pop=pop_if_asked and wants_challenge_password(attrs),  # type: ignore[arg-type]
                signature_hash=requested_signature_hash(attrs),  # type: ignore[arg-type]
            ),
            tally,
        )
        return chain, key  # type: ignore[return-value]

    async def _attend(
        self,
        relay: UdpRelay | TcpRelay,
        index: int,
        start: float,
        journey: Journey,
        failure: Callable[[Exception], tuple[str, str]] = _failure,
    ) -> DeviceOutcome:
        """One device, whatever its kind: its journey on a link of its own, timed, its
        retries tallied and any failure counted (none stops the run), then its links
        closed and its outcome made. failure: the (reason, detail) an exception stands for."""
        link = await relay.open_link()
        links: list[UdpLink | TcpLink] = [link]
        began = time.monotonic()
        ok, reason, detail = True, None, ""
        tally: Counter[str] = Counter()  # this device's retries
        try:
            await journey(self._link_url(link.address), tally, links)
        except Exception as exc:
            ok = False
            reason, detail = failure(exc)
        finished = time.monotonic()
        self.retried.update(tally)
        for opened in links:
            await opened.close()
        traffic = link.traffic
        for later in links[1:]:
            traffic.add(later.traffic)
        return DeviceOutcome(
            index, ok, reason, detail, began - start, finished - began, traffic, tally.total()
        )

    async def _psk_device(
        self, relay: UdpRelay | TcpRelay, index: int, start: float
    ) -> DeviceOutcome:
        """crts/att/sen over PSK DTLS with the device's key, then sren over certificate
        DTLS with the certificate it got."""
        s = self.settings
        identity, psk = s.psk_devices[index]

        async def journey(url: str, tally: Counter[str], links: list[UdpLink | TcpLink]) -> None:
            async with EstClient(
                url, psk=(identity, psk), timeout=s.timeout, block_size=s.block_size
            ) as est:
                # its key's subject; no PoP: tinydtls exposes no tls-unique to link it to
                subject = f"serialNumber={identity},CN={identity}"
                chain, key = await self._first_enrollment(est, tally, subject, pop_if_asked=False)
            if self._sren_relay is not None:
                sren_link = await self._sren_relay.open_link()
                links.append(sren_link)
                sren_url = self._link_url(sren_link.address, self._sren_path)
                async with self._client(sren_url, chain, key) as est:
                    await self._step(est, est.reenroll, tally)

        return await self._attend(relay, index, start, journey)

    def _identity(self, index: int) -> Credential:
        if self.plan.idevid is not None:
            return self.plan.idevid(index)
        serial = f"sim-{self.run_tag}-{index:06d}"
        assert self.settings.maker is not None
        idevid, idevid_key = self.settings.maker.issue_idevid(serial)
        return Credential(serial, [idevid], idevid_key)

    async def _device(self, relay: UdpRelay | TcpRelay, index: int, start: float) -> DeviceOutcome:
        if self.plan.ldevid is not None:
            return await self._renewing_device(relay, index, start)
        identity = self._identity(index)
        serial, idevid, idevid_key = identity.serial, identity.chain, identity.key

        async def journey(url: str, tally: Counter[str], links: list[UdpLink | TcpLink]) -> None:
            async with self._client(url, idevid, idevid_key) as est:
                subject = subject_for(self.plan.subject, serial)  # its IDevID identity
                chain, key = await self._first_enrollment(est, tally, subject, pop_if_asked=True)
            if self.settings.reenroll:
                # sren on a new session authenticated by the certificate just issued
                async with self._client(url, chain, key) as est:
                    chain = await self._step(est, est.reenroll, tally)  # type: ignore[assignment]
            if self.plan.on_enrolled is not None:
                self.plan.on_enrolled(index, Credential(serial, chain, key))  # type: ignore[arg-type]

        return await self._attend(relay, index, start, journey)

    async def _renewing_device(
        self, relay: UdpRelay | TcpRelay, index: int, start: float
    ) -> DeviceOutcome:
        """A renewal storm's device: sren alone, on a session its LDevID authenticates."""
        assert self.plan.ldevid is not None
        held = self.plan.ldevid(index)

        async def journey(url: str, tally: Counter[str], links: list[UdpLink | TcpLink]) -> None:
            if held is None:
                raise LookupError(f"device {index} has no LDevID from an earlier run")
            async with self._client(url, held.chain, held.key) as est:
                chain = await self._step(est, est.reenroll, tally)
            if self.plan.on_enrolled is not None:
                self.plan.on_enrolled(index, Credential(held.serial, chain, held.key))  # type: ignore[arg-type]

        return await self._attend(relay, index, start, journey, _renewal_failure)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
