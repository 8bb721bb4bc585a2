"""Publishing revocation over plain HTTP: the CA's current CRL and its OCSP responder.

Plain HTTP, as relying parties expect for both (RFC 5280 s4.2.1.13 CRL distribution
points and RFC 6960 A.1 name http URLs; what they fetch is signed, and an https URL
would need revocation checks of its own server certificate first).

* CurrentCrl keeps a signed CRL of the CA: re-signed when the store's revocations change
  (polled, since `estcoap ca revoke` runs in another process) and once half its
  validity has passed, so a CRL that a relying party fetched is never stale.
* revocation_app() answers GET of the CRL path (DER, application/pkix-crl) and OCSP:
  POST of an application/ocsp-request to the OCSP path, or GET of the OCSP path followed
  by the URL-encoded base64 of the request (RFC 6960 A.1).

Limits: request bodies of at most ocsp.MAX_REQUEST_BYTES (else 413), request lines and
header fields of at most 8190 bytes (aiohttp: 400), at most MAX_CONNECTIONS connections
at once (one more is closed at once), idle connections closed after KEEPALIVE seconds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import logging
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from cryptography import x509

from ..codec.keytypes import PrivateKey
from .crl import DEFAULT_NEXT_UPDATE, build_crl, encode, refresh_due
from .ocsp import MAX_REQUEST_BYTES, OcspResponder
from .store import Store

log = logging.getLogger(__name__)

CRL_CONTENT_TYPE = "application/pkix-crl"  # RFC 5280 s4.2.1.13 via RFC 2585
OCSP_REQUEST_TYPE = "application/ocsp-request"  # RFC 6960 A.1
OCSP_RESPONSE_TYPE = "application/ocsp-response"
DEFAULT_CRL_PATH = "/crl/ca.crl"
DEFAULT_OCSP_PATH = "/ocsp"
POLL_SECONDS = 2.0
# HTTP caches may keep the CRL this long: a revocation re-signs it within POLL_SECONDS,
# and a cache holding it longer would hide that.
CRL_MAX_AGE = 60
MAX_CONNECTIONS = 256
KEEPALIVE = 15.0
_MAX_LINE = 8190


class CurrentCrl:
    """The CA's complete CRL (every certificate it revoked), kept current."""

    def __init__(
        self,
        store: Store,
        ca_cert: x509.Certificate,
        ca_key: PrivateKey,
        *,
        next_update: dt.timedelta = DEFAULT_NEXT_UPDATE,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.store = store
        self.ca_cert = ca_cert
        self._ca_key = ca_key
        self.next_update = next_update
        self._clock = clock
        self.crl: x509.CertificateRevocationList | None = None
        self.der = b""
        self._version = -1

    def refresh(self) -> bool:
        """Re-sign when a revocation was made since the last CRL or it is half-way to its
        nextUpdate; True when it did. Blocking (a store read, a signature over every
        entry): serve runs it in a worker thread."""
        now = self._clock()
        # The version before the list: a revocation landing in between is then in this
        # CRL or, at the latest, in the next one.
        version = self.store.revocation_version()
        if self.crl is not None and version == self._version and not refresh_due(self.crl, now):
            return False
        crl = build_crl(
            self.store.revoked_list(),
            ca_cert=self.ca_cert,
            ca_key=self._ca_key,
            number=self.store.next_crl_number(),
            next_update=self.next_update,
            now=now,
        )
        self.crl, self.der, self._version = crl, encode(crl, pem=False), version
        return True

    async def keep_current(self, period: float = POLL_SECONDS) -> None:
        """Refresh every period seconds until cancelled; a failure is logged and retried."""
        while True:
            await asyncio.sleep(period)
            try:
                if await asyncio.to_thread(self.refresh):
                    log.info("re-signed the CRL: %d revoked", len(self.crl or ()))
            except Exception:
                log.exception("could not re-sign the CRL; the previous one is still served")


def revocation_app(
    *,
    crl: CurrentCrl | None = None,
    crl_path: str = DEFAULT_CRL_PATH,
    ocsp: OcspResponder | None = None,
    ocsp_path: str = DEFAULT_OCSP_PATH,
) -> web.Application:
    """The routes for what is given: the CRL at crl_path, OCSP at ocsp_path."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    if crl is not None:
        app.router.add_get(crl_path, _crl_handler(crl), allow_head=True)
    if ocsp is not None:
        root = ocsp_path.rstrip("/")
        post, get = _ocsp_handlers(ocsp, root)
        app.router.add_post(root or "/", post)
        app.router.add_get(f"{root}/{{request:.+}}", get, allow_head=False)
    return app


def _crl_handler(crl: CurrentCrl) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        if crl.crl is None:  # serve signs one before it listens: cannot happen
            raise web.HTTPServiceUnavailable(text="no CRL yet\n")
        headers = {"Cache-Control": f"max-age={CRL_MAX_AGE}"}
        return web.Response(body=crl.der, content_type=CRL_CONTENT_TYPE, headers=headers)

    return handler


def _ocsp_handlers(
    ocsp: OcspResponder, root: str
) -> tuple[Callable[[web.Request], Any], Callable[[web.Request], Any]]:
    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        return _ocsp_response(ocsp.respond(body))

    async def get(request: web.Request) -> web.Response:
        # From the raw path: '+' and '/' of base64 may come percent-encoded or not.
        encoded = urllib.parse.unquote(request.raw_path.split("?", 1)[0][len(root) + 1 :])
        try:
            der = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError):
            der = b""  # answered malformedRequest, as any request that does not parse
        return _ocsp_response(ocsp.respond(der))

    return post, get


def _ocsp_response(der: bytes) -> web.Response:
    return web.Response(body=der, content_type=OCSP_RESPONSE_TYPE)


@dataclass
class RevocationHttp:
    runner: web.AppRunner
    host: str
    port: int

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_revocation_http(host: str, port: int, app: web.Application) -> RevocationHttp:
    """Listen on host:port (0: a free port, see .port) with the limits of the module doc."""
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=KEEPALIVE,
        max_line_size=_MAX_LINE,
        max_field_size=_MAX_LINE,
    )
    await runner.setup()
    site = _CappedSite(runner, host, port, backlog=128)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return RevocationHttp(runner, host, int(runner.addresses[0][1]))


class _CappedSite(web.TCPSite):
    """A TCPSite that closes connections beyond MAX_CONNECTIONS as they are accepted."""

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None

        def factory() -> asyncio.BaseProtocol:
            if len(server.connections) >= MAX_CONNECTIONS:
                return _Refused()
            return server()

        self._server = await asyncio.get_running_loop().create_server(
            factory, self._host, self._port, backlog=self._backlog
        )


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()
