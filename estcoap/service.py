"""The EstService seam: typed requests, typed results, typed errors.

Fronts (CoAP, HTTPS) translate wire <-> these types; services (LocalCA,
Upstream) implement EstService. Errors carry a meaning; each front maps
meanings to its own codes in one place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .codec import pkcs7
from .codec.pkcs10 import Csr
from .trust import ClientTrust


class Transport(enum.Enum):
    HTTPS = "https"
    COAPS = "coaps"


@dataclass(frozen=True)
class Peer:
    """Who sent a request, as the front authenticated it.

    certificates: the client's verified chain, leaf first (empty when none).
    tls_unique: the channel binding of this (D)TLS connection (RFC 5929), or None
        when the channel has none (TLS 1.3); it backs proof-of-possession.
    http_user: the user name that passed HTTP Basic/Digest authentication.
    """

    transport: Transport
    certificates: tuple[x509.Certificate, ...] = ()
    tls_unique: bytes | None = None
    http_user: str | None = None
    address: str | None = None
    # Why the channel offers no tls-unique, for diagnostics (e.g. "TLS 1.3").
    tls_unique_unavailable: str | None = None
    # The device identity an RA says it authenticated (the EST-Requester header, as
    # received): a claim the service honours only from a peer it knows as an RA.
    forwarded_identity: str | None = None
    # The PSK identity the DTLS handshake authenticated (certificate-less enrollment):
    # which subject it may have is the service's policy, not the transport's.
    psk_identity: str | None = None

    @property
    def certificate(self) -> x509.Certificate | None:
        return self.certificates[0] if self.certificates else None

    def describe(self) -> str:
        """A short identity for records and logs."""
        if self.certificate is not None:
            return f"cert:{self.certificate.subject.rfc4514_string()}"
        if self.http_user is not None:
            return f"user:{self.http_user}"
        if self.psk_identity is not None:
            return f"psk:{self.psk_identity}"
        return f"anonymous@{self.address or '?'}"


@dataclass(frozen=True)
class EnrollRequest:
    """simpleenroll, simplereenroll and serverkeygen all carry a CSR."""

    csr: Csr
    peer: Peer
    label: str | None = None


# ---- results -------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A certs-only answer: the issued certificate first, then its chain (or CA certs)."""

    certificates: tuple[x509.Certificate, ...]
    # The PKCS#7 bytes as received from upstream, passed on unchanged when present.
    raw_pkcs7: bytes | None = field(default=None, compare=False)
    # Each certificate's DER when the producer has it (as received, or as just recorded):
    # a front then sends it as is; re-encoding costs about 6 us per certificate.
    raw_certificates: tuple[bytes, ...] | None = field(default=None, compare=False)

    @cached_property
    def pkcs7_der(self) -> bytes:
        if self.raw_pkcs7:
            return self.raw_pkcs7
        if self.raw_certificates is not None:
            return pkcs7.encode_certs_only_der(self.raw_certificates)
        return pkcs7.encode_certs_only(self.certificates)

    def certificate_der(self, index: int = 0) -> bytes:
        """DER of one certificate (the issued one by default)."""
        if self.raw_certificates is not None:
            return self.raw_certificates[index]
        return self.certificates[index].public_bytes(Encoding.DER)


@dataclass(frozen=True)
class Pending:
    """Not decided yet: ask again, with the identical request, after retry_after seconds."""

    retry_after: int


class KeyFormat(enum.Enum):
    PKCS8 = "pkcs8"  # unencrypted PKCS#8 PrivateKeyInfo DER
    CMS_ENVELOPED = "cms"  # CMS EnvelopedData (280), passed through untouched


@dataclass(frozen=True)
class KeyAndCertificate:
    private_key: bytes
    key_format: KeyFormat
    certificates: Certificates


@dataclass(frozen=True)
class CsrAttributes:
    """DER of a CsrAttrs SEQUENCE (RFC 7030 s4.5.2, RFC 9908)."""

    der: bytes


# ---- errors --------------------------------------------------------------


class EstError(Exception):
    """A refusal with a meaning; str() is a short diagnostic for the peer."""


class BadRequest(EstError):
    """The request is malformed: bad CSR, bad encoding, bad parameters."""


class UnsupportedFormat(BadRequest):
    """The request body is not in the media type / content-format the operation takes."""


class Unauthenticated(EstError):
    """No or invalid credentials (client certificate, password, PoP)."""


class Forbidden(EstError):
    """Authenticated, but not allowed this (identity mismatch, policy)."""


class NotFound(EstError):
    """Unknown label, or nothing to answer (no csrattrs)."""


class NotSupported(EstError):
    """An operation or form this service does not implement (fullcmc, encrypted keys)."""


class UpstreamUnavailable(EstError):
    """An upstream server could not be reached or answered garbage."""


class UpstreamTimeout(EstError):
    """An upstream server did not answer in time."""


class ServiceUnavailable(EstError):
    """A part this service needs is down for now (the CA's key token unplugged or refusing
    to sign): nothing was issued or recorded; ask again after retry_after seconds."""

    def __init__(self, diagnostic: str, retry_after: int = 5):
        super().__init__(diagnostic)
        self.retry_after = retry_after


class ServiceFailure(EstError):
    """An internal failure; nothing was recorded."""


# ---- the seam ------------------------------------------------------------


@runtime_checkable
class EstService(Protocol):
    """What every front calls. Labels are None for the default CA.

    Besides the operations, a front reads two facts of the service, declared here as
    read-only properties (a plain or class attribute satisfies them).
    """

    @property
    def front_checks_csr_signature(self) -> bool:
        """Whether a front verifies each CSR's signature before calling the service: True
        for a service that issues; False for one that forwards to a CA which verifies it
        anyway (gateway Upstream), where a second check would only cost CPU."""
        ...

    @property
    def client_trust(self) -> ClientTrust:
        """The anchors a front verifies client certificates against in the (D)TLS
        handshake, and the bounded memory of verified signatures that the front fills and
        the service's own chain checks use."""
        ...

    def has_label(self, label: str | None) -> bool: ...

    async def cacerts(self, label: str | None) -> Certificates: ...

    async def csrattrs(self, label: str | None, peer: Peer) -> CsrAttributes: ...

    async def enroll(self, request: EnrollRequest) -> Certificates | Pending: ...

    async def reenroll(self, request: EnrollRequest) -> Certificates | Pending: ...

    async def serverkeygen(self, request: EnrollRequest) -> KeyAndCertificate | Pending: ...
