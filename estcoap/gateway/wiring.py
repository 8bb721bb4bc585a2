"""Put the pieces together: an Upstream over a connection pool, behind the coap front
(the RFC 9148 s5 gateway) or the https front (the RFC 7030 proxy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509

from estcoap import service as svc
from estcoap.client.https_transport import HttpsTransport, client_ssl_context
from estcoap.coap.psk import CoapsPskServer, start_coaps_psk_server
from estcoap.coap.server import CoapsServer, start_coaps_server
from estcoap.codec.operations import EST_WELL_KNOWN
from estcoap.https import HttpsServer, start_https_server
from estcoap.https.users import User
from estcoap.tls_token_key import TokenKeyRef

from .pool import HttpsPool
from .psk_devices import PskDevices
from .upstream import Upstream

DEFAULT_TIMEOUT = 10.0
DEFAULT_CONNECTIONS = 8


@dataclass(frozen=True)
class UpstreamSettings:
    """How to reach the upstream EST server and who we are to it."""

    url: str  # https://host[:port][/root]; the root defaults to /.well-known/est
    trust: Sequence[x509.Certificate] | None = None  # its TLS anchors; None: the system's
    ra_chain: Sequence[x509.Certificate] = ()  # our RA certificate (id-kp-cmcRA), leaf first
    ra_key: object | None = None  # a private key, or a TokenKeyRef (a key in a PKCS#11 token)
    user: str | None = None  # optional HTTP Basic/Digest credentials upstream
    password: str | None = None
    timeout: float = DEFAULT_TIMEOUT  # per request, connecting included
    connections: int = DEFAULT_CONNECTIONS  # kept-alive connections at most
    labels: Mapping[str, str | None] = field(default_factory=dict)  # device label -> upstream


def parse_upstream_url(url: str) -> tuple[str, int, str]:
    """(host, port, root path) of an https:// upstream URL."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"the upstream must be an https:// URL, got {url!r}")
    try:
        port = parts.port or 443
    except ValueError as exc:
        raise ValueError(f"bad port in upstream URL {url!r}") from exc
    root = parts.path.rstrip("/") or EST_WELL_KNOWN
    return parts.hostname, port, root


def open_upstream(
    settings: UpstreamSettings,
    *,
    trust_clients: Sequence[x509.Certificate] = (),
    require_pop: bool = False,
) -> Upstream:
    """The Upstream service over a pool of keep-alive connections (nothing connects yet)."""
    host, port, root = parse_upstream_url(settings.url)
    if settings.timeout <= 0:
        raise ValueError("the upstream timeout must be positive")
    ssl_context = client_ssl_context(
        trust=settings.trust, cert_chain=settings.ra_chain, key=settings.ra_key
    )

    def connection() -> HttpsTransport:
        return HttpsTransport(
            host,
            port,
            root=root,
            ssl_context=ssl_context,
            user=settings.user,
            password=settings.password,
            # Upstream bounds each whole forward with this timeout (a timer per request
            # is measurable here); an abandoned exchange closes its connection (pool.py).
            timeout=None,
        )

    return Upstream(
        HttpsPool(connection, settings.connections),
        labels=settings.labels,
        require_pop=require_pop,
        trust_clients=trust_clients,
        timeout=settings.timeout,
    )


async def learn_upstream_ca(upstream: Upstream) -> str | None:
    """Fetch the upstream CA so its certificates may re-enroll; a warning when that fails."""
    try:
        await upstream.learn_upstream_ca()
    except svc.EstError as exc:
        return (
            f"could not fetch the upstream CA certificates ({exc}); devices holding "
            "certificates from the upstream CA cannot connect until restart"
        )
    return None


@dataclass
class Forwarding:
    """A running front over an Upstream: the coap front is the gateway, the https
    front the proxy."""

    server: CoapsServer | HttpsServer
    upstream: Upstream
    warning: str | None = None
    psk_server: CoapsPskServer | None = None  # the gateway's PSK DTLS front, when started

    @property
    def url(self) -> str:
        return self.server.url

    async def close(self) -> None:
        if self.psk_server is not None:
            await self.psk_server.close()
        await self.server.close()
        await self.upstream.transport.close()


Gateway = Forwarding  # the EST-coaps gateway (RFC 9148 s5)
Proxy = Forwarding  # the RFC 7030 proxy (RA)


async def start_gateway(
    upstream: Upstream,
    binds: Sequence[tuple[str, int]],
    *,
    cert_chain: str | Path,
    key: str | Path,
    short_root: str | None = None,
    **coaps_options: object,
) -> Gateway:
    """Serve EST-coaps for `upstream` on binds (port 0 picks a free port).

    Devices are verified in the DTLS handshake against the Upstream's trust_clients
    (IDevID makers) plus the upstream CA, fetched first so LDevIDs can re-enroll.
    """
    warning = await learn_upstream_ca(upstream)
    anchors = upstream.client_trust_anchors()
    if not anchors:
        raise ValueError("no trust anchors for device certificates: give trust_clients")
    server = await start_coaps_server(
        upstream,
        binds,
        cert_chain=cert_chain,
        key=key,
        trust_anchors=anchors,
        labels=tuple(upstream.labels),
        short_root=short_root,
        **coaps_options,  # type: ignore[arg-type]
    )
    return Gateway(server, upstream, warning)


async def start_psk_front(
    gateway: Gateway,
    bind: tuple[str, int],
    devices: PskDevices,
    *,
    short_root: str | None = None,
) -> CoapsPskServer:
    """Also serve the gateway's devices that have a pre-shared key instead of a certificate
    (psk_devices.py), over PSK DTLS on one address; they are forwarded like the others."""
    upstream = gateway.upstream
    upstream.psk_devices = devices
    gateway.psk_server = await start_coaps_psk_server(
        upstream,
        bind,
        psk_keys=devices.key,
        labels=tuple(upstream.labels),
        short_root=short_root,
    )
    return gateway.psk_server


async def start_proxy(
    upstream: Upstream,
    host: str,
    port: int,
    *,
    cert_chain: str | Path,
    key: str | Path | TokenKeyRef,
    users: Sequence[User] = (),
    **https_options: object,
) -> Proxy:
    """Serve EST over HTTPS for `upstream`: client certificates from trust_clients or
    the upstream CA, or HTTP users."""
    warning = await learn_upstream_ca(upstream)
    server = await start_https_server(
        upstream,
        host,
        port,
        cert_chain=cert_chain,
        key=key,
        client_trust=upstream.client_trust_anchors(),
        users=users,
        require_pop=upstream.require_pop,
        **https_options,  # type: ignore[arg-type]
    )
    return Proxy(server, upstream, warning)
