"""Start and stop the HTTPS front on a listening socket, with limits on what a peer can hold.

The limits and their defaults (each a start_https_server() argument):

* max_connections (1024): established TLS connections at once; one more is answered
  503 + Retry-After and closed.
* handshake_timeout (10 s): a TLS handshake not finished by then is dropped.
* keepalive_timeout (30 s): a connection idle that long is closed; aiohttp arms the same
  timer when a connection opens, so a request head that trickles in (slowloris) must be
  complete within it too.
* body_timeout (30 s): a body must arrive within it of its head, else 408 (front.py).
* After an answer sent before the body was read (401, 413, 415, 408), what is left of the
  body is read and dropped for at most 5 s (so the client can read the answer), then the
  connection is closed.
* Request line and each header field at most 8190 bytes, at most 64 header fields
  (aiohttp answers 400); body at most max_body (413).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from cryptography import x509

from ..codec.operations import EST_WELL_KNOWN
from ..observe.hooks import NO_HOOK, RequestHook
from ..service import EstService
from ..tls_token_key import TokenKeyRef
from .auth import DEFAULT_SCHEMES, HttpAuthenticator
from .expect import unsupported_expect
from .front import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY, FRONT, HttpsFront
from .tls import server_ssl_context
from .users import User

DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_KEEPALIVE_TIMEOUT = 30.0
MAX_LINE_SIZE = 8190  # the request line, and (max_field_size) each header field
MAX_HEADERS = 64  # an EST request carries about ten
LINGERING_TIME = 5.0  # aiohttp's default, 10 s, is long for bodies of at most max_body
# Seconds a client turned away for too many connections is asked to wait.
_BUSY_RETRY_AFTER = 5

log = logging.getLogger("estcoap.https")


@dataclass
class HttpsServer:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}{EST_WELL_KNOWN}"

    @property
    def front(self) -> HttpsFront:
        return self.runner.app[FRONT]

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_https_server(
    service: EstService,
    host: str,
    port: int,
    *,
    cert_chain: str | Path,
    key: str | Path | TokenKeyRef,
    client_trust: Sequence[x509.Certificate] | None = None,
    users: Sequence[User] = (),
    max_body: int = DEFAULT_MAX_BODY,
    require_pop: bool = False,
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
    nonce_lifetime: float = 300.0,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    http_auth: Sequence[str] = DEFAULT_SCHEMES,
    auth_options: Mapping[str, Any] | None = None,
    request_hook: RequestHook = NO_HOOK,
) -> HttpsServer:
    """Serve EST over HTTPS on host:port (0 picks a free port; see .port).

    client_trust defaults to the service's client_trust.anchors (LocalCA: --trust-clients
    plus the CA itself, so certificates it issued can re-enroll). require_pop caps TLS at 1.2
    because only TLS 1.2 has tls-unique. The limits are described in the module doc.
    http_auth: the offered HTTP auth schemes in order (auth.SCHEMES); auth_options: more
    HttpAuthenticator settings (failure limits, password pool). request_hook hears of
    every EST request answered (metrics, request log).
    """
    if client_trust is None:
        client_trust = service.client_trust.anchors
    ctx = server_ssl_context(cert_chain, key, client_trust, tls12_only=require_pop)
    authenticator = HttpAuthenticator(
        users, nonce_lifetime=nonce_lifetime, schemes=http_auth, **(auth_options or {})
    )
    front = HttpsFront(
        service,
        authenticator=authenticator,
        max_body=max_body,
        body_timeout=body_timeout,
        hook=request_hook,
    )
    runner = web.AppRunner(
        front.make_app(),
        access_log=None,
        handle_signals=False,
        keepalive_timeout=keepalive_timeout,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_LINE_SIZE,
        max_headers=MAX_HEADERS,
        lingering_time=LINGERING_TIME,
        logger=PeerFaultLogger(logging.getLogger("aiohttp.server")),
    )
    await runner.setup()
    assert runner.server is not None
    runner.server.request_handler = _expect_checked(runner.server.request_handler)
    site = _LimitedSite(
        runner,
        host,
        port,
        ssl_context=ctx,
        backlog=512,
        max_connections=max_connections,
        handshake_timeout=handshake_timeout,
    )
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    return HttpsServer(runner, host, int(bound[1]))


def _expect_checked(handle: Callable[[Any], Awaitable[web.StreamResponse]]) -> Any:
    # Before routing: a request no route takes (404, CONNECT ...) meets aiohttp's default
    # expect handler, whose 417 fails with 500 on a non-UTF-8 value (expect.py).
    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if "Expect" in request.headers:
            refusal = unsupported_expect(request)
            if refusal is not None:
                return refusal
        return await handle(request)

    return handler


# How much of aiohttp's reason a log line keeps: it quotes the peer's bytes (a 100-byte
# excerpt of a line too long, a bad header, a URL), which are the peer's to choose.
PEER_QUOTE_LIMIT = 40  # characters from the first quote on
REASON_LIMIT = 80  # characters in all (an unquoted URL is the peer's too)


def peer_fault_reason(exc: HttpProcessingError) -> str:
    """The kind of fault (aiohttp's exception class) and its reason's first line, with what it
    quotes of the peer cut short: e.g. "LineTooLong: Got more than 8190 bytes when reading:
    b'GGGG..."."""
    text = str(exc.message).split("\n", 1)[0]
    quote = min((i for i in (text.find("'"), text.find('"')) if i >= 0), default=len(text))
    if len(text) - quote > PEER_QUOTE_LIMIT:
        text = text[: quote + PEER_QUOTE_LIMIT] + "..."
    if len(text) > REASON_LIMIT:
        text = text[:REASON_LIMIT] + "..."
    return f"{type(exc).__name__}: {text}"


class PeerFaultLogger(logging.LoggerAdapter):
    """aiohttp's server logger, told apart: a request aiohttp could not parse is the peer's
    fault, one short INFO line (the traceback at DEBUG); anything else stays an ERROR."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.info(f"{msg}: %d %s", *args, exc_info.code, peer_fault_reason(exc_info))
            self.debug(msg, *args, exc_info=exc_info, **kwargs)
        else:
            self.error(msg, *args, exc_info=exc_info, **kwargs)


# True in a worker process (estcoap.workers): the listening socket joins its port's
# SO_REUSEPORT group and the kernel spreads new connections over the workers.
reuse_port = False


class _LimitedSite(web.TCPSite):
    """A TCPSite that caps established connections and bounds the TLS handshake."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        handshake_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._max_connections = max_connections
        self._handshake_timeout = handshake_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            _capped(server, self._max_connections),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=self._handshake_timeout,
            reuse_port=reuse_port or None,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]


def _capped(server: web.Server, limit: int) -> Callable[[], asyncio.BaseProtocol]:
    # Counted when a connection is accepted (before its handshake), from the connections
    # aiohttp holds (after theirs): a handshake in progress is bounded by handshake_timeout.
    def factory() -> asyncio.BaseProtocol:
        if len(server.connections) >= limit:
            return _TooBusy(limit)
        return server()

    return factory


class _TooBusy(asyncio.Protocol):
    """Answers 503 once the handshake is done, and closes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        body = b"too many connections\n"
        transport.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
            % (_BUSY_RETRY_AFTER, len(body), body)
        )
        transport.close()
        log.warning("connection turned away: %d connections open (the limit)", self.limit)
