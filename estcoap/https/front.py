"""The EST over HTTPS front (RFC 7030): /.well-known/est[/<label>]/<operation> on aiohttp.

It only translates: path -> operation (from the operation table), credentials ->
Peer, base64 body -> Csr, and the service's answer -> HTTP (responses.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from aiohttp import web

from ..codec import b64
from ..codec.errors import CodecError
from ..codec.names import REQUESTER_HEADER
from ..codec.operations import (
    EST_WELL_KNOWN,
    HTTP_PKCS10,
    Operation,
    OperationSpec,
    by_long_name,
    is_operation_name,
)
from ..codec.pkcs10 import Csr, parse_csr
from ..observe.hooks import NO_HOOK, RequestHook
from ..service import (
    EnrollRequest,
    EstError,
    EstService,
    NotFound,
    NotSupported,
    Peer,
    Unauthenticated,
)
from . import responses
from .auth import AuthTryLater, HttpAuthenticator
from .expect import expect_continue
from .tls import PeerReader

log = logging.getLogger("estcoap.https")

DEFAULT_MAX_BODY = 64 * 1024
# A body must arrive within this many seconds of the request head: a peer that trickles
# its body would otherwise hold the connection and the handler for ever (slowloris).
DEFAULT_BODY_TIMEOUT = 30.0
_READ_CHUNK = 16 * 1024


class _AuthRequired(Unauthenticated):
    def __init__(self, reason: str, *, stale: bool = False) -> None:
        super().__init__(reason)
        self.stale = stale


class _Refusal(Exception):
    """A protocol-level refusal that is not a service meaning (405, 413, 415)."""

    def __init__(
        self, status: int, diagnostic: str, *, close: bool = False, **headers: str
    ) -> None:
        super().__init__(diagnostic)
        self.status = status
        self.close = close
        self.headers = headers


class HttpsFront:
    """Translates EST over HTTPS to the service; see the module doc."""

    def __init__(
        self,
        service: EstService,
        *,
        authenticator: HttpAuthenticator | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        hook: RequestHook = NO_HOOK,
    ) -> None:
        self.service = service
        self.hook = hook
        self.body_timeout = body_timeout
        self.auth = authenticator if authenticator and authenticator.enabled else None
        self.max_body = max_body
        self._peers = PeerReader()
        # A service that has its CSRs verified further on (the proxy's upstream) says so.
        self._check_csr_signature = service.front_checks_csr_signature

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body)
        for path in (EST_WELL_KNOWN + "/{op}", EST_WELL_KNOWN + "/{label}/{op}"):
            app.router.add_route("*", path, self.handle, expect_handler=expect_continue)
        app.on_cleanup.append(self._close_auth)
        app[FRONT] = self  # for whoever reads its counters (authentication limits, pool)
        return app

    async def _close_auth(self, _: web.Application) -> None:
        if self.auth is not None:
            self.auth.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer, and report the answer to the hook (metrics, request log)."""
        start = time.perf_counter()
        seen = _Seen()
        response = await self._answer(request, seen)
        spec = by_long_name(request.match_info["op"])
        label = request.match_info.get("label")
        self.hook.request_done(
            spec.long_name if spec is not None else "unknown",  # bounded: a peer picks the path
            str(response.status),
            time.perf_counter() - start,
            label=label if label is None or self.service.has_label(label) else "unknown",
            address=request.remote,
            peer=seen.peer,
        )
        return response

    async def _answer(self, request: web.Request, seen: _Seen) -> web.StreamResponse:
        try:
            return await self._handle(request, seen)
        except _Refusal as exc:
            resp = responses.text(exc.status, str(exc), **exc.headers)
            if exc.close:
                resp.force_close()
            return resp
        except AuthTryLater as exc:
            return responses.try_later(exc.status, str(exc), exc.retry_after)
        except (EstError, CodecError) as exc:
            challenges: list[str] = []
            if isinstance(exc, Unauthenticated) and self.auth is not None:
                challenges = self.auth.challenges(stale=getattr(exc, "stale", False))
            return responses.error(exc, challenges)
        except Exception as exc:
            # One line (a peer may trigger this at will); the traceback when debugging.
            log.error(
                "request %s %r failed: %s: %s",
                request.method,
                request.path,
                type(exc).__name__,
                exc,
            )
            log.debug("request %s %r failed", request.method, request.path, exc_info=True)
            return responses.text(500, "internal server error")

    async def _handle(self, request: web.Request, seen: _Seen) -> web.Response:
        label = request.match_info.get("label")
        name = request.match_info["op"]
        spec = by_long_name(name)
        if spec is None:
            raise NotFound(f"no EST operation {name!r}")
        if label is not None and (is_operation_name(label) or not self.service.has_label(label)):
            raise NotFound(f"unknown CA label {label!r}")
        if request.method != spec.method:
            raise _Refusal(405, f"{name} takes {spec.method}", Allow=spec.method)
        if spec.operation is Operation.FULLCMC:
            raise NotSupported("fullcmc is not supported by this server")
        peer = await self._peer(request, authenticate=spec.operation is not Operation.CACERTS)
        seen.peer = peer
        op = spec.operation
        if op is Operation.CACERTS:
            return responses.result(await self.service.cacerts(label))
        if op is Operation.CSRATTRS:
            return responses.result(await self.service.csrattrs(label, peer))
        enroll = EnrollRequest(csr=await self._read_csr(request, spec), peer=peer, label=label)
        if op is Operation.SIMPLEENROLL:
            return responses.result(await self.service.enroll(enroll))
        if op is Operation.SIMPLEREENROLL:
            return responses.result(await self.service.reenroll(enroll))
        return responses.result(await self.service.serverkeygen(enroll))

    async def _peer(self, request: web.Request, *, authenticate: bool) -> Peer:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        has_cert = bool(ssl_object and ssl_object.getpeercert(binary_form=True))
        user = None
        if authenticate and self.auth is not None:
            header = request.headers.get("Authorization")
            if header or not has_cert:
                # Awaited: a password check runs in a worker pool, never on this loop.
                outcome = await self.auth.authenticate(
                    header, request.method, request.raw_path, request.remote
                )
                if outcome.user is None:
                    raise _AuthRequired(outcome.reason, stale=outcome.stale)
                user = outcome.user
        peer = self._peers.peer(ssl_object, request.remote, user)
        forwarded = request.headers.get(REQUESTER_HEADER)
        if forwarded is not None and has_cert:
            # An RA names the device it vouches for; only a client with a certificate can
            # be an RA, and the service honours the claim only from one it knows as such.
            peer = dataclasses.replace(peer, forwarded_identity=forwarded)
        return peer

    async def _read_csr(self, request: web.Request, spec: OperationSpec) -> Csr:
        content_type = request.headers.get("Content-Type", "")
        media = content_type.split(";", 1)[0].strip().lower()
        if media != HTTP_PKCS10:
            got = f"got {media!r}" if media else "none given"
            raise _Refusal(415, f"{spec.long_name} expects Content-Type {HTTP_PKCS10} ({got})")
        too_big = _Refusal(413, f"request body exceeds {self.max_body} bytes", close=True)
        if request.content_length is not None and request.content_length > self.max_body:
            raise too_big
        body = bytearray()
        try:
            async with asyncio.timeout(self.body_timeout):
                while chunk := await request.content.read(_READ_CHUNK):
                    body += chunk
                    if len(body) > self.max_body:
                        raise too_big
        except TimeoutError:
            raise _Refusal(
                408, f"request body not received within {self.body_timeout:g} s", close=True
            ) from None
        # RFC 8951: base64 whatever Content-Transfer-Encoding says; tolerant of whitespace.
        return parse_csr(b64.decode(bytes(body)), check_signature=self._check_csr_signature)


@dataclasses.dataclass
class _Seen:
    """Who the request authenticated as, once it has (the request log's identity)."""

    peer: Peer | None = None


# The front serving an app: app[FRONT].auth has the authentication counters.
FRONT = web.AppKey("estcoap_https_front", HttpsFront)
