"""PKCS#7 / CMS certs-only SignedData (RFC 5652 degenerate form, RFC 7030 s4.1.3)."""

from __future__ import annotations

import warnings

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from . import der as asn1
from .errors import Pkcs7Error

_SIGNED_DATA = "1.2.840.113549.1.7.2"


def encode_certs_only(certificates: list[x509.Certificate] | tuple[x509.Certificate, ...]) -> bytes:
    """DER of a certs-only SignedData holding the certificates, in order."""
    if not certificates:
        raise Pkcs7Error("a certs-only structure needs at least one certificate")
    return pkcs7.serialize_certificates(list(certificates), Encoding.DER)


def decode_certs_only(der: bytes) -> list[x509.Certificate]:
    """The certificates of a certs-only SignedData given as DER or BER (RFC 7030 A.1 is BER)."""
    if not der:
        raise Pkcs7Error("PKCS#7 body is empty")
    _check_content_info(der)
    try:
        with warnings.catch_warnings():
            # cryptography warns when it falls back to BER; BER is valid CMS.
            warnings.simplefilter("ignore")
            certs = pkcs7.load_der_pkcs7_certificates(der)
    except (ValueError, x509.InvalidVersion) as exc:
        raise Pkcs7Error(f"not a PKCS#7 certs-only structure: {exc}") from exc
    if not certs:
        raise Pkcs7Error("PKCS#7 structure holds no certificate")
    return certs


def _check_content_info(data: bytes) -> None:
    """Name the problem before cryptography's generic parse error: framing, content type."""
    if data[:1] != b"\x30":
        raise Pkcs7Error("PKCS#7 must be a ContentInfo SEQUENCE (is it base64 or PEM?)")
    if data[1:2] == b"\x80":  # BER indefinite length: no end to check, content starts at 2
        start = 2
    else:
        try:
            top, end = asn1.read_tlv(data, 0)
        except asn1.DerError as exc:
            raise Pkcs7Error(f"PKCS#7 structure is cut short or malformed: {exc}") from exc
        if end != len(data):
            raise Pkcs7Error(f"PKCS#7 has {len(data) - end} trailing bytes after the structure")
        start = len(top.raw) - len(top.content)
    try:
        content_type, _ = asn1.read_tlv(data, start)
        oid = asn1.decode_oid(content_type)
    except asn1.DerError as exc:
        raise Pkcs7Error(f"PKCS#7 ContentInfo has no content type: {exc}") from exc
    if oid != _SIGNED_DATA:
        raise Pkcs7Error(f"PKCS#7 content type is {oid}, not signedData")
