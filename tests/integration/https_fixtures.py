"""Shared pieces of the HTTPS tests: a real CA in a tmp dir, the front on an ephemeral port."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from estcoap.ca import CaPaths, LocalCA
from estcoap.https import HttpsServer, start_https_server, user_from_arg

USER, PASSWORD = "alice", "correct horse"


@dataclass
class Running:
    server: HttpsServer
    ca: LocalCA
    paths: CaPaths

    @property
    def url(self) -> str:
        return self.server.url


@contextlib.asynccontextmanager
async def running(
    ca_dir: Path,
    *,
    users: tuple[str, ...] = (f"{USER}:{PASSWORD}",),
    approval: str = "auto",
    require_pop: bool = False,
    labels: tuple[str, ...] = (),
    retry_after: int = 30,
    **server_options: object,
) -> AsyncIterator[Running]:
    ca = LocalCA.open(
        ca_dir, approval=approval, require_pop=require_pop, labels=labels, retry_after=retry_after
    )
    paths = CaPaths.of(ca_dir)
    server = await start_https_server(
        ca,
        "127.0.0.1",
        0,
        cert_chain=paths.server_cert,
        key=paths.server_key,
        users=[user_from_arg(u) for u in users],
        require_pop=require_pop,
        **server_options,  # type: ignore[arg-type]
    )
    try:
        yield Running(server, ca, paths)
    finally:
        await server.close()
        ca.close()


def client_ssl(paths: CaPaths, *, tls12: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(paths.ca_cert))
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


@contextlib.asynccontextmanager
async def raw_session(paths: CaPaths) -> AsyncIterator[aiohttp.ClientSession]:
    """An independent HTTP client (aiohttp) for requests EstClient would never send."""
    connector = aiohttp.TCPConnector(ssl=client_ssl(paths))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session
