"""Start the console: its aiohttp application on one TCP address, HTTPS by default."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from ..ca.store import Store
from ..throttle import AuthLimits
from .app import Console, ConsoleConfig
from .sessions import Sessions
from .tally import RequestTally


class PlainHttpRefused(ValueError):
    """Plain HTTP asked for on an address other hosts can reach."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_context(cert_chain: str | Path, key: str | Path) -> ssl.SSLContext:
    """TLS 1.2 or newer with the server's certificate (the EST server's own)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    ctx.load_cert_chain(str(cert_chain), str(key))
    return ctx


@dataclass
class ConsoleServer:
    console: Console
    runner: web.AppRunner
    secure: bool
    sockets: list[tuple[str, int]] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.sockets[0][:2]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.secure else 'http'}://{host}:{port}/"

    def watch_dtls_sessions(self, count: Callable[[], int]) -> None:
        """Show this count of live DTLS sessions on the fleet page (serve's CoAPs front)."""
        self.console.dtls_sessions = count

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_console(
    store: Store,
    host: str,
    port: int,
    *,
    users_file: Path,
    cert_chain: str | Path | None = None,
    key: str | Path | None = None,
    plain_http: bool = False,
    tally: RequestTally | None = None,
    sessions: Sessions | None = None,
    limits: AuthLimits | None = None,
) -> ConsoleServer:
    """Serve the console on host:port (0: a free port). HTTPS with cert_chain and key,
    unless plain_http, which only a loopback address may have."""
    if plain_http and not is_loopback(host):
        raise PlainHttpRefused(
            f"plain HTTP for the console only on a loopback address, not {host}: passwords "
            "and session cookies would cross the network in clear"
        )
    if not plain_http and (cert_chain is None or key is None):
        raise ValueError("the console needs the server certificate and key for HTTPS")
    config = ConsoleConfig(
        users_file=users_file,
        secure=not plain_http,
        sessions=sessions if sessions is not None else Sessions(),
        limits=limits or AuthLimits(),
    )
    console = Console(store, config, tally=tally)
    runner = web.AppRunner(console.app(), access_log=None, handle_signals=False)
    await runner.setup()
    ctx = None if plain_http else tls_context(cert_chain, key)  # type: ignore[arg-type]
    site = web.TCPSite(runner, host, port, ssl_context=ctx)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    server = ConsoleServer(console, runner, secure=not plain_http)
    for address in runner.addresses:
        server.sockets.append(tuple(address[:2]))
    return server
