"""PKCS#7 / CMS certs-only SignedData (RFC 5652 degenerate form, RFC 7030 s4.1.3)."""

from __future__ import annotations

import warnings

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from .errors import Pkcs7Error


def encode_certs_only(certificates: list[x509.Certificate] | tuple[x509.Certificate, ...]) -> bytes:
    """DER of a certs-only SignedData holding the certificates, in order."""
    if not certificates:
        raise Pkcs7Error("a certs-only structure needs at least one certificate")
    return pkcs7.serialize_certificates(list(certificates), Encoding.DER)


def decode_certs_only(der: bytes) -> list[x509.Certificate]:
    """The certificates of a certs-only SignedData given as DER or BER (RFC 7030 A.1 is BER)."""
    if not der:
        raise Pkcs7Error("PKCS#7 body is empty")
    try:
        with warnings.catch_warnings():
            # cryptography warns when it falls back to BER; BER is valid CMS.
            warnings.simplefilter("ignore")
            certs = pkcs7.load_der_pkcs7_certificates(der)
    except ValueError as exc:
        raise Pkcs7Error(f"not a PKCS#7 certs-only structure: {exc}") from exc
    if not certs:
        raise Pkcs7Error("PKCS#7 structure holds no certificate")
    return certs
