"""EST over HTTPS client transport: one keep-alive TLS connection we own.

A small, strict HTTP/1.1 client on asyncio streams rather than a pooled library
client, because proof-of-possession needs the tls-unique of exactly the connection
that will carry the enroll POST. One transport = one connection, used by one call
at a time; it reconnects when the server closed it.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import os
import secrets
import ssl
import tempfile
import time
from base64 import b64encode
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..codec import b64
from ..codec.authheaders import (
    DIGEST_ALGORITHMS,
    Challenge,
    digest_ha1,
    digest_response,
    parse_challenges,
    quote,
)
from ..codec.errors import CodecError
from ..codec.multipart import KeygenParts, content_format_for, parse_content_type
from ..codec.operations import (
    HTTP_MULTIPART_MIXED,
    HTTP_PKCS7,
    MEDIA_TYPES,
    ContentFormat,
    OperationSpec,
)
from ..tls_token_key import TokenKeyRef, use_token_key
from .http1 import MAX_HEADERS, MAX_RESPONSE_BODY, HttpResponse, ResponseReader
from .transport import ChannelBound, Reply, ReplyKind, ServerCheck, ServerNotTrusted, TransportError

__all__ = [
    "MAX_HEADERS",
    "MAX_RESPONSE_BODY",
    "HttpResponse",
    "HttpsTransport",
    "HttpsTransportError",
    "client_ssl_context",
    "content_format_of",
    "reply_of",
    "retry_after_seconds",
]

DEFAULT_PORT = 443
PENDING_WITHOUT_RETRY_AFTER = 60  # a 202 must carry Retry-After; be patient when it does not


class HttpsTransportError(TransportError):
    """The TLS connection or the HTTP exchange failed before the server answered."""


class HttpsServerNotTrusted(HttpsTransportError, ServerNotTrusted):
    """The server's certificate failed verification against our trust anchors."""


def client_ssl_context(
    *,
    trust: Sequence[x509.Certificate] | None,
    verify: bool = True,
    cert_chain: Sequence[x509.Certificate] = (),
    key: object | None = None,
    tls12_only: bool = False,
) -> ssl.SSLContext:
    """Explicit trust anchors (the system's when trust is None); verify=False only to bootstrap."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls12_only:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif trust:
        pems = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in trust)
        ctx.load_verify_locations(cadata=pems)
    else:
        ctx.load_default_certs()
    if cert_chain:
        if key is None:
            raise HttpsTransportError("a client certificate needs its private key")
        _load_chain(ctx, cert_chain, key)
    return ctx


def _load_chain(ctx: ssl.SSLContext, chain: Sequence[x509.Certificate], key: object) -> None:
    # ssl loads identities only from files: write them to a private directory, load, delete.
    # A key in a PKCS#11 token (TokenKeyRef) stays there: only the chain is a file then.
    if isinstance(key, TokenKeyRef):
        with tempfile.TemporaryDirectory(prefix="estcoap-") as tmp:
            cert_path = Path(tmp, "cert.pem")
            cert_path.write_bytes(
                b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
            )
            use_token_key(ctx, cert_path, key)
        return
    key_pem = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with tempfile.TemporaryDirectory(prefix="estcoap-") as tmp:
        cert_path, key_path = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key_pem)
        ctx.load_cert_chain(str(cert_path), str(key_path))


class _Digest:
    """Client state for one Digest challenge: reused for later requests with nc+1."""

    def __init__(self, challenge: Challenge, user: str, password: str) -> None:
        p = challenge.params
        self.algorithm = p.get("algorithm", "MD5").upper()
        self.realm = p.get("realm", "")
        self.nonce = p.get("nonce", "")
        self.opaque = p.get("opaque")
        self.user = user
        self.ha1 = digest_ha1(self.algorithm, user, self.realm, password)
        self.nc = 0

    def header(self, method: str, uri: str) -> str:
        self.nc += 1
        nc = f"{self.nc:08x}"
        cnonce = secrets.token_hex(8)
        response = digest_response(
            self.algorithm,
            self.ha1,
            method=method,
            uri=uri,
            nonce=self.nonce,
            nc=nc,
            cnonce=cnonce,
            qop="auth",
        )
        parts = [
            f"username={quote(self.user)}",
            f"realm={quote(self.realm)}",
            f"uri={quote(uri)}",
            f"algorithm={self.algorithm}",
            f"nonce={quote(self.nonce)}",
            f"nc={nc}",
            f"cnonce={quote(cnonce)}",
            "qop=auth",
            f"response={quote(response)}",
        ]
        if self.opaque is not None:
            parts.append(f"opaque={quote(self.opaque)}")
        return "Digest " + ", ".join(parts)


def _choose(challenges: list[Challenge]) -> Challenge | None:
    """Digest SHA-256, then Digest MD5 (qop=auth only), then Basic."""
    digests = [
        c
        for c in challenges
        if c.scheme == "digest"
        and c.params.get("algorithm", "MD5").upper() in DIGEST_ALGORITHMS
        and "auth" in [q.strip() for q in c.params.get("qop", "").split(",")]
    ]
    for algorithm in DIGEST_ALGORITHMS:
        for c in digests:
            if c.params.get("algorithm", "MD5").upper() == algorithm:
                return c
    return next((c for c in challenges if c.scheme == "basic"), None)


class HttpsTransport:
    """ClientTransport for https:// EST servers."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        root: str,
        ssl_context: ssl.SSLContext,
        server_name: str | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout: float | None = 30.0,
        server_check: ServerCheck | None = None,
    ) -> None:
        """timeout bounds connecting and each exchange; None leaves that to the caller
        (the gateway bounds a whole forward, waiting for a pooled connection included).
        server_check: awaited with the server's certificate after each handshake, before
        anything is sent (a revocation check); what it raises refuses the connection."""
        self.server_check = server_check
        self.host = host
        self.port = port
        self.root = root.rstrip("/")
        self.ssl_context = ssl_context
        self.server_name = server_name or host
        self.user = user
        self.password = password
        self.timeout = timeout
        self._protocol: _HttpProtocol | None = None
        self._lock = asyncio.Lock()
        self._basic: str | None = None  # learnt: the server takes Basic; send it up front
        self._digest: _Digest | None = None
        self.connections_made = 0
        host_name = f"[{host}]" if ":" in host else host
        self._fixed_headers = f"Host: {host_name}:{port}\r\nUser-Agent: estcoap\r\nAccept: */*"

    # ---- connection ----------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.open

    async def _connect(self) -> None:
        await self._drop()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                _, self._protocol = await loop.create_connection(
                    _HttpProtocol,
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.server_name,
                )
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message
            raise HttpsServerNotTrusted(f"server certificate not trusted: {reason}") from exc
        except ConnectionRefusedError as exc:
            raise HttpsTransportError(
                f"cannot connect to {self.host}:{self.port}: connection refused: "
                "is the server running and the port right?"
            ) from exc
        except TimeoutError as exc:
            within = f" within {self.timeout:g} s" if self.timeout is not None else ""
            raise HttpsTransportError(
                f"cannot connect to {self.host}:{self.port}: no answer{within}"
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise HttpsTransportError(
                f"cannot connect to {self.host}:{self.port}: {exc or type(exc).__name__}"
            ) from exc
        self.connections_made += 1
        if self.server_check is not None:
            certificate = self.peer_certificate()
            try:
                await self.server_check([certificate] if certificate is not None else [])
            except BaseException:
                await self._drop()
                raise

    async def _drop(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            await protocol.close()

    def ssl_object(self) -> ssl.SSLObject | None:
        return self._protocol.ssl_object() if self._protocol else None

    async def tls_unique(self) -> bytes | None:
        """tls-unique of the live connection (connecting if needed): the next call() uses it."""
        async with self._lock:
            if not self.connected:
                await self._connect()
            return self._channel_tls_unique()

    def _channel_tls_unique(self) -> bytes | None:
        obj = self.ssl_object()
        if obj is None or obj.version() == "TLSv1.3":
            return None
        return obj.get_channel_binding("tls-unique")

    def peer_certificate(self) -> x509.Certificate | None:
        obj = self.ssl_object()
        der = obj.getpeercert(binary_form=True) if obj else None
        return x509.load_der_x509_certificate(der) if der else None

    async def close(self) -> None:
        await self._drop()

    # ---- one EST call ----------------------------------------------------------

    def path(self, spec: OperationSpec, label: str | None) -> str:
        return f"{self.root}/{label}/{spec.long_name}" if label else f"{self.root}/{spec.long_name}"

    async def call(
        self,
        spec: OperationSpec,
        label: str | None,
        body: bytes | None,
        accept: ContentFormat | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """headers: added to the request (an RA's EST-Requester, estcoap/gateway/upstream.py)."""
        target = self.path(spec, label)
        payload = b64.encode(body) if body is not None else None
        response = await self.request(
            spec.method, target, payload, content_type=_media(spec), headers=headers
        )
        return reply_of(response)

    async def call_bound(
        self,
        spec: OperationSpec,
        label: str | None,
        body: ChannelBound,
        accept: ContentFormat | None = None,
    ) -> Reply:
        target = self.path(spec, label)

        def payload(tls_unique: bytes) -> bytes:
            return b64.encode(body(tls_unique))

        response = await self.request(spec.method, target, payload, content_type=_media(spec))
        return reply_of(response)

    async def request(
        self,
        method: str,
        target: str,
        body: bytes | ChannelBound | None,
        *,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        """One request, answering an authentication challenge when we have a password."""
        extra = [f"{name}: {value}" for name, value in (headers or {}).items()]
        if any("\r" in line or "\n" in line for line in extra):
            raise ValueError("a request header cannot hold CR or LF")
        response = await self._send(
            method, target, body, content_type, self._auth(method, target), extra
        )
        if response.status != 401 or not (self.user and self.password):
            return response
        challenges = parse_challenges(response.get_all("www-authenticate"))
        for _ in range(2):  # the first answer, then once more if the nonce was stale
            chosen = _choose(challenges)
            if chosen is None:
                return response
            if chosen.scheme == "basic":
                token = b64encode(f"{self.user}:{self.password}".encode()).decode()
                self._basic, self._digest = f"Basic {token}", None
            else:
                self._digest, self._basic = _Digest(chosen, self.user, self.password), None
            response = await self._send(
                method, target, body, content_type, self._auth(method, target), extra
            )
            if response.status != 401:
                return response
            challenges = parse_challenges(response.get_all("www-authenticate"))
            if not any(c.params.get("stale", "").lower() == "true" for c in challenges):
                break
        return response

    def _auth(self, method: str, target: str) -> str | None:
        if self._digest is not None:
            return self._digest.header(method, target)
        return self._basic

    async def _send(
        self,
        method: str,
        target: str,
        body: bytes | ChannelBound | None,
        content_type: str | None,
        authorization: str | None,
        extra: Sequence[str] = (),
    ) -> HttpResponse:
        lines = [f"{method} {target} HTTP/1.1", self._fixed_headers, *extra]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        if body is not None:
            lines.append(f"Content-Type: {content_type or 'application/octet-stream'}")
            lines.append("Content-Transfer-Encoding: base64")
        async with self._lock:
            for attempt in range(2):
                reused = self.connected
                if not reused:
                    await self._connect()
                # A bound body is made here, once the connection that carries it is known.
                payload = body if body is None or isinstance(body, bytes) else self._bind(body)
                length = [f"Content-Length: {len(payload)}"] if payload is not None else []
                head = ("\r\n".join([*lines, *length]) + "\r\n\r\n").encode("latin-1")
                try:
                    # asyncio.timeout, not wait_for: no extra task and loop hop per request.
                    async with asyncio.timeout(self.timeout):
                        return await self._exchange(head, payload, method)
                except _ClosedEarly as exc:
                    await self._drop()
                    # A kept-alive connection the server had closed: retry once on a new one.
                    if not reused or attempt:
                        raise HttpsTransportError(f"server closed the connection: {exc}") from exc
                except TimeoutError as exc:
                    await self._drop()
                    raise HttpsTransportError(f"no answer within {self.timeout:g} s") from exc
                except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError) as exc:
                    await self._drop()
                    raise HttpsTransportError(f"HTTP exchange failed: {exc}") from exc
        raise AssertionError("unreachable")

    def _bind(self, body: ChannelBound) -> bytes:
        tls_unique = self._channel_tls_unique()
        if tls_unique is None:
            raise HttpsTransportError(
                "proof-of-possession impossible: the connection has no tls-unique (TLS 1.3)"
            )
        return body(tls_unique)

    async def _exchange(self, head: bytes, body: bytes | None, method: str) -> HttpResponse:
        assert self._protocol is not None
        response = await self._protocol.exchange(head + body if body else head, method)
        if not response.keep_alive:
            await self._drop()
        return response


class _ClosedEarly(Exception):
    """The connection ended before any byte of the answer: safe to retry on a new one."""


class _HttpProtocol(asyncio.Protocol):
    """One TLS connection: writes a request, frames the answer as its bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader()
        self.open = False
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._method = "GET"
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writable: asyncio.Future[None] | None = None  # set while the peer pushes back
        self._error: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    def data_received(self, data: bytes) -> None:
        try:
            self.reader.feed(data)
        except ValueError as exc:
            self._fail(exc)
            return
        self._answer()

    def eof_received(self) -> bool:
        self.open = False
        self.reader.eof = True
        self._answer()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._error = exc
        self.reader.eof = True
        self._answer()
        if not self._lost.done():
            self._lost.set_result(None)
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def ssl_object(self) -> ssl.SSLObject | None:
        return self.transport.get_extra_info("ssl_object") if self.transport else None

    async def exchange(self, data: bytes, method: str) -> HttpResponse:
        if not self.open or self.transport is None:
            raise _ClosedEarly("connection closed")
        if self.reader.buffer:  # bytes nobody asked for (a late or unsolicited answer)
            raise _ClosedEarly("unexpected bytes before the request")
        self._method = method
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(data)
            if self._writable is not None:
                await self._writable
            return await waiter
        finally:
            self._waiter = None

    def _answer(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            response = self.reader.next_response(self._method)
        except ValueError as exc:  # malformed, or cut short after the first bytes
            waiter.set_exception(exc)
            return
        if response is not None:
            waiter.set_result(response)
        elif self.reader.eof:  # not one byte of an answer: the caller may retry
            waiter.set_exception(_ClosedEarly(str(self._error or "no response")))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    async def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.open = False
        await asyncio.wait({self._lost}, timeout=1.0)


# ---- HTTP answer -> Reply ------------------------------------------------------


def _media(spec: OperationSpec) -> str | None:
    return MEDIA_TYPES[spec.request_format] if spec.request_format else None


def content_format_of(media_type: str) -> ContentFormat | None:
    fmt = content_format_for(media_type)
    if fmt is None and parse_content_type(media_type) == (HTTP_PKCS7, {}):
        return ContentFormat.PKCS7_CERTS_ONLY  # no smime-type: the certs-only default
    return fmt


@functools.lru_cache(maxsize=64)
def _media_of(content_type: str) -> tuple[str, ContentFormat | None]:
    """(media type, content-format) of a Content-Type; servers repeat a few values."""
    return parse_content_type(content_type)[0], content_format_of(content_type)


def _der(body: bytes) -> bytes:
    """RFC 8951: base64 whatever the headers say; accept raw DER from lax servers."""
    try:
        return b64.decode(body)
    except CodecError:
        if body[:1] == b"\x30":
            return body
        raise


def retry_after_seconds(value: str, now: float | None = None) -> int:
    """Retry-After as delta-seconds or an HTTP-date (RFC 9110 s10.2.3)."""
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return PENDING_WITHOUT_RETRY_AFTER
    return max(0, round(when - (time.time() if now is None else now)))


def reply_of(response: HttpResponse) -> Reply:
    status = response.status
    if status == 202:
        header = response.get("retry-after")
        wait = retry_after_seconds(header) if header else PENDING_WITHOUT_RETRY_AFTER
        return Reply(ReplyKind.PENDING, retry_after=wait)
    if status == 204:
        return Reply(ReplyKind.OK, body=b"", content_format=None)
    if status != 200:
        text = response.body.decode("utf-8", "replace").strip()
        diagnostic = text.splitlines()[0][:300] if text else response.reason
        return Reply(ReplyKind.ERROR, status=str(status), diagnostic=diagnostic)
    content_type = response.get("content-type")
    try:
        media_type, fmt = _media_of(content_type)
        if media_type == HTTP_MULTIPART_MIXED:
            # One form for both transports: multipart/mixed becomes the multipart-core array.
            parts = KeygenParts.from_mixed(response.body, content_type)
            return Reply(
                ReplyKind.OK, body=parts.to_core(), content_format=ContentFormat.MULTIPART_CORE
            )
        return Reply(ReplyKind.OK, body=_der(response.body), content_format=fmt)
    except CodecError as exc:
        return Reply(ReplyKind.ERROR, status="200", diagnostic=f"undecodable answer: {exc}")
