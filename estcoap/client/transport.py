"""What EstClient needs from a wire: one EST call, and the channel's tls-unique.

EstClient holds the EST logic (formats, pending retries, PoP, provisioning);
a transport (https_transport, coaps_transport) only moves one request and
translates the wire's answer into a Reply.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from ..codec.operations import ContentFormat, OperationSpec

# Awaited with the server's chain (leaf first) once the (D)TLS handshake is done, before a
# request goes out; raises (a TransportError) to refuse the server, e.g. when revoked.
ServerCheck = Callable[[Sequence[x509.Certificate]], Awaitable[None]]


class TransportError(Exception):
    """The channel or the exchange failed before the server could answer."""


class ServerNotTrusted(TransportError):
    """The server's certificate does not chain to our trust anchors."""


class ServerRevoked(TransportError):
    """The server's certificate is revoked, or its revocation could not be established."""


class ReplyKind(enum.Enum):
    OK = "ok"
    PENDING = "pending"  # HTTP 202 + Retry-After, CoAP 5.03 + Max-Age
    ERROR = "error"


@dataclass(frozen=True)
class Reply:
    kind: ReplyKind
    # OK: the body as binary DER/CBOR (the HTTPS transport already undid base64 and,
    # for multipart/mixed, re-expressed the parts as the CoAP multipart-core CBOR array).
    body: bytes = b""
    content_format: ContentFormat | None = None
    retry_after: int = 0  # PENDING: seconds to wait
    status: str = ""  # ERROR: "404" or "4.04"
    diagnostic: str = ""  # ERROR: the server's short reason


class ClientTransport(Protocol):
    async def call(
        self,
        spec: OperationSpec,
        label: str | None,
        body: bytes | None,
        accept: ContentFormat | None = None,
    ) -> Reply:
        """Send one EST request (body is DER, e.g. a CSR) and return the server's answer."""
        ...

    async def tls_unique(self) -> bytes | None:
        """The tls-unique of the channel the next call() will use, connecting if needed."""
        ...

    async def close(self) -> None: ...


# A request body that carries the tls-unique of the connection it travels on
# (proof-of-possession, RFC 7030 s3.5): called with that tls-unique, it returns the body.
ChannelBound = Callable[[bytes], bytes]


class ChannelBindingTransport(ClientTransport, Protocol):
    """A transport that can send a body made for the connection that carries it."""

    async def call_bound(
        self,
        spec: OperationSpec,
        label: str | None,
        body: ChannelBound,
        accept: ContentFormat | None = None,
    ) -> Reply:
        """call() with body(tls_unique) of the connection the request goes out on: made
        again when that is a new connection (the server closed after a 401, a kept-alive
        connection had gone), so the proof matches the channel the server sees."""
        ...
