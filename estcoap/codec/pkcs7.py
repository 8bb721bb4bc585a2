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
    certs = _certificates_of_der(der)
    if certs:
        return certs
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


def _certificates_of_der(data: bytes) -> list[x509.Certificate] | None:
    """Fast path for the usual strict-DER SignedData: walk to the certificates field and load
    each certificate, skipping cryptography's PKCS#7 loader (~40x slower than one certificate).

    None when the input is BER, has no plain certificates, or anything looks unusual: the
    caller then takes cryptography's path, which also gives the diagnostics.
    """
    try:
        outer = asn1.read_one(data).children()
        if len(outer) != 2 or not (outer[1].is_context(0) and outer[1].constructed):
            return None
        signed = asn1.read_one(outer[1].content)
        fields = signed.children() if signed.is_universal(asn1.SEQUENCE_NUMBER) else []
        if len(fields) < 5 or not (
            fields[0].is_universal(2)  # version
            and fields[1].is_universal(asn1.SET_NUMBER)  # digestAlgorithms
            and fields[2].is_universal(asn1.SEQUENCE_NUMBER)  # encapContentInfo
            and fields[-1].is_universal(asn1.SET_NUMBER)  # signerInfos
        ):
            return None
        optional = fields[3:-1]  # [0] certificates, then [1] crls, each at most once
        if not optional or not optional[0].is_context(0) or len(optional) > 2:
            return None
        if len(optional) == 2 and not optional[1].is_context(1):
            return None
        choices = optional[0].children()
        if not choices or any(c.tag != asn1.SEQUENCE for c in choices):
            return None  # an empty set, or other CertificateChoices: cryptography decides
        return [x509.load_der_x509_certificate(c.raw) for c in choices]
    except (asn1.DerError, ValueError, x509.InvalidVersion):
        return None
