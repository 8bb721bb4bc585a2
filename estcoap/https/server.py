"""Start and stop the HTTPS front on a listening socket."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509

from ..codec.operations import EST_WELL_KNOWN
from ..service import EstService
from .auth import HttpAuthenticator
from .front import DEFAULT_MAX_BODY, HttpsFront
from .tls import server_ssl_context
from .users import User


@dataclass
class HttpsServer:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}{EST_WELL_KNOWN}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_https_server(
    service: EstService,
    host: str,
    port: int,
    *,
    cert_chain: str | Path,
    key: str | Path,
    client_trust: Sequence[x509.Certificate] | None = None,
    users: Sequence[User] = (),
    max_body: int = DEFAULT_MAX_BODY,
    require_pop: bool = False,
    keepalive_timeout: float = 75.0,
    nonce_lifetime: float = 300.0,
) -> HttpsServer:
    """Serve EST over HTTPS on host:port (0 picks a free port; see .port).

    client_trust defaults to the service's client_trust_anchors() (LocalCA: --trust-clients
    plus the CA itself, so certificates it issued can re-enroll). require_pop caps TLS at 1.2
    because only TLS 1.2 has tls-unique.
    """
    if client_trust is None:
        anchors = getattr(service, "client_trust_anchors", None)
        client_trust = list(anchors()) if anchors else []
    ctx = server_ssl_context(cert_chain, key, client_trust, tls12_only=require_pop)
    authenticator = HttpAuthenticator(users, nonce_lifetime=nonce_lifetime)
    front = HttpsFront(service, authenticator=authenticator, max_body=max_body)
    runner = web.AppRunner(
        front.make_app(), access_log=None, keepalive_timeout=keepalive_timeout, handle_signals=False
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ctx, backlog=512)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    return HttpsServer(runner, host, int(bound[1]))
