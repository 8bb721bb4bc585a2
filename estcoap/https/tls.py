"""TLS for the HTTPS front: the server context and who is on the other end.

Proof-of-possession needs tls-unique (RFC 5929), which TLS 1.3 does not define;
the RFC 9266 exporter that replaces it is not reachable from Python's ssl module.
So a server that requires PoP is capped at TLS 1.2, and on TLS 1.3 connections
the Peer says why no tls-unique is available.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..service import Peer, Transport
from ..tls_token_key import TokenKeyRef, use_token_key

TLS13_NO_TLS_UNIQUE = "TLS 1.3 has no tls-unique; use TLS 1.2 for proof-of-possession"

# TLS 1.2 suites: forward-secret key exchange and AEAD only (AES-GCM, ChaCha20-Poly1305),
# as RFC 9325 s4.2 recommends; the CBC suites OpenSSL also enables are refused. TLS 1.3
# suites are all AEAD and not affected by this string.
AEAD_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def server_ssl_context(
    cert_chain: str | Path,
    key: str | Path | TokenKeyRef,
    client_trust: Sequence[x509.Certificate],
    *,
    tls12_only: bool = False,
    tls12_ciphers: str = AEAD_TLS12_CIPHERS,
) -> ssl.SSLContext:
    """Server identity from PEM files, or the key in a PKCS#11 token (a TokenKeyRef, loaded
    through OpenSSL's pkcs11 engine: estcoap/tls_token_key.py); optional client
    certificates checked against client_trust.

    tls12_ciphers is an OpenSSL cipher string for TLS 1.2 (AEAD suites by default).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(tls12_ciphers)
    if tls12_only:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if isinstance(key, TokenKeyRef):
        use_token_key(ctx, cert_chain, key)
    else:
        ctx.load_cert_chain(str(cert_chain), str(key))
    if client_trust:
        ctx.load_verify_locations(
            cadata="".join(c.public_bytes(Encoding.PEM).decode() for c in client_trust)
        )
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class PeerReader:
    """Builds a Peer from an ssl object; caches parsed client certificates by DER.

    The cached value is the chain tuple itself, so a client's requests carry the very
    same tuple and services find their remembered verdicts by its identity.
    """

    def __init__(self) -> None:
        self._chains: dict[bytes, tuple[x509.Certificate, ...]] = {}

    def peer(
        self, ssl_object: ssl.SSLObject | None, address: str | None, http_user: str | None
    ) -> Peer:
        if ssl_object is None:  # not TLS: no channel facts at all
            return Peer(Transport.HTTPS, http_user=http_user, address=address)
        certs: tuple[x509.Certificate, ...] = ()
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            # Python 3.11 exposes only the verified leaf; the service re-checks the chain.
            chain = self._chains.get(der)
            if chain is None:
                chain = (x509.load_der_x509_certificate(der),)
                if len(self._chains) > 4096:
                    self._chains.clear()
                self._chains[der] = chain
            certs = chain
        unavailable = None
        tls_unique = None
        if ssl_object.version() == "TLSv1.3":
            unavailable = TLS13_NO_TLS_UNIQUE
        else:
            tls_unique = ssl_object.get_channel_binding("tls-unique")
        return Peer(
            Transport.HTTPS,
            certificates=certs,
            tls_unique=tls_unique,
            http_user=http_user,
            address=address,
            tls_unique_unavailable=unavailable,
        )
