"""What a DTLS endpoint is configured with: identity, trust anchors, limits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

# RFC 9148 s3: CCM_8 with secp256r1 must be offered; it goes first. OpenSSL 3 only
# allows CCM_8 at security level 0.
DEFAULT_CIPHERS = (
    "ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-CCM:@SECLEVEL=0"
)
# IPv6 minimum MTU; the datagram budget is this minus the IPv6 + UDP headers.
DEFAULT_MTU = 1280
_IP_UDP_OVERHEAD = 48


def load_certificates(*paths: str | Path) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for path in paths:
        certs.extend(x509.load_pem_x509_certificates(Path(path).read_bytes()))
    return certs


def load_private_key(path: str | Path) -> PrivateKeyTypes:
    return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)


@dataclass(frozen=True)
class DtlsServerConfig:
    certificate_chain: Sequence[x509.Certificate]  # leaf first
    private_key: PrivateKeyTypes
    trust_anchors: Sequence[x509.Certificate]  # for client certificates
    require_client_certificate: bool = True
    mtu: int = DEFAULT_MTU
    max_sessions: int = 20_000
    handshake_timeout: float = 10.0
    idle_timeout: float = 600.0
    ciphers: str = DEFAULT_CIPHERS
    # Drop each session's OpenSSL connection once the handshake is confirmed and protect
    # records with the negotiated AEAD directly (~80 KiB -> a few KiB per idle session).
    compact_sessions: bool = True
    # Requests remembered for duplicate detection (RFC 7252 s4.5), each with its response
    # (about 3 KB): a bound on that memory (message_manager.py).
    max_remembered_requests: int = 100_000
    max_remembered_requests_per_session: int = 10_000

    @property
    def datagram_limit(self) -> int:
        return self.mtu - _IP_UDP_OVERHEAD

    @classmethod
    def from_files(
        cls,
        cert_pem_path: str | Path,
        key_path: str | Path,
        trust_pem_paths: Sequence[str | Path] | str | Path,
        **options: object,
    ) -> DtlsServerConfig:
        """Chain PEM (leaf first), key PEM, and one or more PEM files of client trust anchors."""
        if isinstance(trust_pem_paths, (str, Path)):
            trust_pem_paths = [trust_pem_paths]
        return cls(
            certificate_chain=load_certificates(cert_pem_path),
            private_key=load_private_key(key_path),
            trust_anchors=load_certificates(*trust_pem_paths),
            **options,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class DtlsClientConfig:
    trust_anchors: Sequence[x509.Certificate]  # for the server certificate
    certificate_chain: Sequence[x509.Certificate] = ()
    private_key: PrivateKeyTypes | None = None
    # The name the server certificate must carry; None means the URI's host.
    server_name: str | None = None
    handshake_timeout: float = 10.0
    mtu: int = DEFAULT_MTU
    ciphers: str = DEFAULT_CIPHERS
    # As on the server: once the server's first application record confirms the
    # handshake, protect records with the negotiated AEAD directly (OpenSSL's per-record
    # calls cost more than the AEAD itself) and drop the OpenSSL connection.
    compact_sessions: bool = True

    @property
    def datagram_limit(self) -> int:
        return self.mtu - _IP_UDP_OVERHEAD

    @classmethod
    def from_files(
        cls,
        trust_pem_paths: Sequence[str | Path] | str | Path,
        cert_pem_path: str | Path | None = None,
        key_path: str | Path | None = None,
        **options: object,
    ) -> DtlsClientConfig:
        if isinstance(trust_pem_paths, (str, Path)):
            trust_pem_paths = [trust_pem_paths]
        return cls(
            trust_anchors=load_certificates(*trust_pem_paths),
            certificate_chain=load_certificates(cert_pem_path) if cert_pem_path else (),
            private_key=load_private_key(key_path) if key_path else None,
            **options,  # type: ignore[arg-type]
        )
