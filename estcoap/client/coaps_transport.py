"""EST-coaps client transport: one EST call over CoAP + certificate DTLS (RFC 9148)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import urlsplit

from aiocoap import Message
from aiocoap import error as coap_error
from aiocoap.numbers import TransportTuning
from aiocoap.numbers.codes import Code
from aiocoap.util.linkformat import parse as parse_links
from cryptography import x509

from ..codec.operations import (
    EST_ROOT_RT,
    EST_WELL_KNOWN,
    ContentFormat,
    Operation,
    OperationSpec,
    spec_for,
)
from ..dtls.errors import DtlsError, HandshakeFailed, PeerNameMismatch
from .transport import ChannelBound, Reply, ReplyKind, ServerCheck, ServerNotTrusted, TransportError

DEFAULT_PORT = 5684
NO_MAX_AGE_DEFAULT = 60  # RFC 7252 s5.10.5: an absent Max-Age means 60 s
_BLOCK_SIZES = {16: 0, 32: 1, 64: 2, 128: 3, 256: 4, 512: 5, 1024: 6}


class CoapsTransportError(TransportError):
    """The DTLS channel or the CoAP exchange failed before the server could answer."""


class CoapsServerNotTrusted(CoapsTransportError, ServerNotTrusted):
    """The server's certificate failed verification against our trust anchors."""


def retransmission_tuning(ack_timeout: float) -> TransportTuning:
    """RFC 7252 s4.8 transmission parameters with ACK_TIMEOUT set (the RFC lets it be
    configured; the other parameters, and the doubling back-off, stay as specified)."""

    class Tuning(TransportTuning):
        ACK_TIMEOUT = ack_timeout

    return Tuning()


def _not_trusted(exc: DtlsError) -> bool:
    # OpenSSL's reason when our own check of the server's chain failed; an alert from the
    # server (it refused our certificate) reads differently.
    return isinstance(exc, PeerNameMismatch) or (
        isinstance(exc, HandshakeFailed) and "certificate verify failed" in str(exc)
    )


class CoapsTransport:
    """Speaks to one EST-coaps server. Without a path in the URL, it discovers the
    EST root through /.well-known/core (so servers rooted at /est work too)."""

    def __init__(
        self,
        url: str,
        *,
        trust_anchors: Sequence[x509.Certificate],
        certificate_chain: Sequence[x509.Certificate],
        private_key,
        block_size: int | None = None,
        timeout: float = 30.0,
        server_name: str | None = None,
        handshake_timeout: float | None = None,
        server_check: ServerCheck | None = None,
        ack_timeout: float | None = None,
    ):
        parts = urlsplit(url)
        if parts.scheme != "coaps" or not parts.hostname:
            raise ValueError(f"not a coaps:// URL: {url}")
        if block_size is not None and block_size not in _BLOCK_SIZES:
            raise ValueError("block size must be a power of two from 16 to 1024")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self._origin = f"coaps://{host}:{parts.port or DEFAULT_PORT}"
        path = parts.path.rstrip("/")
        self._root: str | None = path or None
        self._trust_anchors = list(trust_anchors)
        self._chain = list(certificate_chain)
        self._key = private_key
        self._block_exp = _BLOCK_SIZES[block_size] if block_size else None
        self._timeout = timeout
        self._server_name = server_name or parts.hostname
        # The handshake is bounded apart from the exchange, so a silent server is named as
        # such; by the request timeout unless the caller gives its own bound.
        self._handshake_timeout = timeout if handshake_timeout is None else handshake_timeout
        # Awaited with the server's chain once per association, before the first request
        # on it (a revocation check): what it raises refuses the association.
        self._server_check = server_check
        self._checked_remote: object = None
        # CoAP retransmission of our confirmable requests: aiocoap's RFC defaults (2 s)
        # unless a caller (a simulated fleet on loopback) asks for a shorter first timeout.
        self._tuning = None if ack_timeout is None else retransmission_tuning(ack_timeout)
        self._context = None  # created lazily: an aiocoap client Context on our DTLS transport
        self.bytes_sent = 0

    async def _ctx(self):
        if self._context is None:
            from ..dtls import DtlsClientConfig, create_client_context

            config = DtlsClientConfig(
                trust_anchors=self._trust_anchors,
                certificate_chain=self._chain,
                private_key=self._key,
                server_name=self._server_name,
                handshake_timeout=self._handshake_timeout,
            )
            try:
                self._context = await create_client_context(config)
            except Exception as exc:  # OpenSSL refusing the identity (key and certificate)
                raise CoapsTransportError(f"cannot set up DTLS: {exc}") from exc
        return self._context

    async def _connect(self, message: Message) -> None:
        """Resolve the message's remote: the DTLS handshake when there is no association
        yet, bounded by the handshake timeout."""
        context = await self._ctx()
        try:
            await context.find_remote_and_interface(message)
        except DtlsError as exc:
            if _not_trusted(exc):
                raise CoapsServerNotTrusted(
                    f"{self._origin}: server certificate not trusted: {exc}"
                ) from exc
            raise CoapsTransportError(str(exc)) from exc
        if self._block_exp is not None:
            message.remote.maximum_block_size_exp = self._block_exp
        remote = message.remote
        if self._server_check is not None and remote is not self._checked_remote:
            await self._server_check(list(getattr(remote, "peer_certificates", ())))
            self._checked_remote = remote

    async def _exchange(self, message: Message) -> Message:
        context = await self._ctx()
        await self._connect(message)
        try:
            async with asyncio.timeout(self._timeout):  # no extra task, unlike wait_for
                return await context.request(message).response
        except TimeoutError as exc:
            raise CoapsTransportError(
                f"no answer from {self._origin} in {self._timeout:g} s"
            ) from exc
        except coap_error.ConRetransmitsExceeded as exc:  # every retransmission went unanswered
            raise CoapsTransportError(
                f"no answer from {self._origin} to the request or its retransmissions"
            ) from exc
        except Exception as exc:  # aiocoap network errors, DTLS refusals
            raise CoapsTransportError(f"{self._origin}: {exc}") from exc

    async def root(self) -> str:
        """The EST root path, discovered once when the URL gave none."""
        if self._root is None:
            self._root = await self._discover_root()
        return self._root

    async def _discover_root(self) -> str:
        request = Message(
            code=Code.GET,
            uri=f"{self._origin}/.well-known/core?rt={EST_ROOT_RT}*",
            transport_tuning=self._tuning,
        )
        response = await self._exchange(request)
        if response.code.is_successful():
            for link in parse_links(response.payload.decode("utf-8", "replace")).links:
                rts = " ".join(getattr(link, "rt", ())).split()
                if spec_for(Operation.CACERTS).rt in rts:
                    return link.href.rsplit("/", 1)[0]
                if EST_ROOT_RT in rts:
                    return link.href.rstrip("/")
        return EST_WELL_KNOWN

    async def _message(
        self, spec: OperationSpec, label: str | None, accept: ContentFormat | None
    ) -> Message:
        if spec.short_name is None:
            raise CoapsTransportError(f"{spec.long_name} has no EST-coaps resource")
        path = await self.root()
        if label:
            path += f"/{label}"
        message = Message(
            code=Code[spec.method],
            uri=f"{self._origin}{path}/{spec.short_name}",
            transport_tuning=self._tuning,
        )
        if accept is not None:
            message.opt.accept = int(accept)
        return message

    async def call(
        self,
        spec: OperationSpec,
        label: str | None,
        body: bytes | None,
        accept: ContentFormat | None = None,
    ) -> Reply:
        message = await self._message(spec, label, accept)
        if body is not None:
            message.payload = body
            message.opt.content_format = int(ContentFormat.PKCS10)
        return _reply_of(await self._exchange(message))

    async def call_bound(
        self,
        spec: OperationSpec,
        label: str | None,
        body: ChannelBound,
        accept: ContentFormat | None = None,
    ) -> Reply:
        message = await self._message(spec, label, accept)
        await self._connect(message)  # the association that carries it, new or kept
        tls_unique = getattr(message.remote, "tls_unique", None)
        if tls_unique is None:
            raise CoapsTransportError("proof-of-possession impossible: no tls-unique")
        message.payload = body(tls_unique)
        message.opt.content_format = int(ContentFormat.PKCS10)
        return _reply_of(await self._exchange(message))

    async def tls_unique(self) -> bytes | None:
        """tls-unique of the association the next call() uses; resolving the remote
        runs the DTLS handshake when there is no association yet."""
        probe = Message(code=Code.GET, uri=f"{self._origin}/.well-known/core")
        await self._connect(probe)
        return getattr(probe.remote, "tls_unique", None)

    async def close(self) -> None:
        if self._context is not None:
            await self._context.shutdown()
            self._context = None


def _reply_of(response: Message) -> Reply:
    if response.code.is_successful():
        cf = response.opt.content_format
        return Reply(
            ReplyKind.OK,
            body=response.payload,
            content_format=_content_format(cf),
        )
    if response.code == Code.SERVICE_UNAVAILABLE:
        max_age = response.opt.max_age
        return Reply(
            ReplyKind.PENDING, retry_after=NO_MAX_AGE_DEFAULT if max_age is None else max_age
        )
    return Reply(
        ReplyKind.ERROR,
        status=response.code.dotted,
        diagnostic=response.payload.decode("utf-8", "replace"),
    )


def _content_format(value: object) -> ContentFormat | None:
    try:
        return ContentFormat(int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
