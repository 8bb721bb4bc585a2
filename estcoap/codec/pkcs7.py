"""PKCS#7 / CMS certs-only SignedData (RFC 5652 degenerate form, RFC 7030 s4.1.3)."""

from __future__ import annotations

import warnings

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from . import der as asn1
from . import oids
from .errors import Pkcs7Error


def encode_certs_only(certificates: list[x509.Certificate] | tuple[x509.Certificate, ...]) -> bytes:
    """DER of a certs-only SignedData holding the certificates (in DER's SET OF order)."""
    if not certificates:
        raise Pkcs7Error("a certs-only structure needs at least one certificate")
    return pkcs7.serialize_certificates(list(certificates), Encoding.DER)


def encode_certs_only_der(certificates: list[bytes] | tuple[bytes, ...]) -> bytes:
    """encode_certs_only for certificates already in DER: the same bytes, written here
    (about 1 us) rather than by cryptography from certificate objects (about 9 us)."""
    if not certificates:
        raise Pkcs7Error("a certs-only structure needs at least one certificate")
    signed_data = asn1.sequence(
        [
            asn1.integer(1),  # version
            _EMPTY_SET,  # digestAlgorithms
            _DATA_CONTENT_INFO,  # encapContentInfo: id-data, no content
            # [0] IMPLICIT SET OF: DER sorts the elements by their encodings, as
            # cryptography does, so the order given is not kept.
            asn1.context(0, b"".join(sorted(certificates))),
            _EMPTY_SET,  # signerInfos
        ]
    )
    return asn1.sequence([_SIGNED_DATA_OID, asn1.context(0, signed_data)])


def decode_certs_only(der: bytes) -> list[x509.Certificate]:
    """The certificates of a certs-only SignedData given as DER or BER (RFC 7030 A.1 is BER)."""
    ders = _certificate_ders_fast(der)
    if ders is not None:
        try:
            return [x509.load_der_x509_certificate(d) for d in ders]
        except (ValueError, x509.InvalidVersion):
            pass  # cryptography's loader below names the problem
    return _load_with_cryptography(der)


def decode_certs_only_with_der(der: bytes) -> list[tuple[x509.Certificate, bytes]]:
    """decode_certs_only, with each certificate's DER as it was sent: a relay that passes a
    certificate on then needs no re-encoding (about 6 us per certificate)."""
    ders = _certificate_ders_fast(der)
    if ders is not None:
        try:
            return [(x509.load_der_x509_certificate(d), d) for d in ders]
        except (ValueError, x509.InvalidVersion):
            pass
    return [(c, c.public_bytes(Encoding.DER)) for c in _load_with_cryptography(der)]


def _load_with_cryptography(der: bytes) -> list[x509.Certificate]:
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
    if oid != oids.ID_SIGNED_DATA:
        raise Pkcs7Error(f"PKCS#7 content type is {oid}, not signedData")


# The contentType TLV of a SignedData ContentInfo, as DER encodes it.
_SIGNED_DATA_OID = oids.ID_SIGNED_DATA_DER
_DATA_CONTENT_INFO = asn1.sequence([oids.ID_DATA_DER])
_EMPTY_SET = asn1.set_of([])
_A0, _A1 = 0xA0, 0xA1  # [0] and [1], constructed


def _certificate_ders_fast(data: bytes) -> list[bytes] | None:
    """Fast path for the usual strict-DER SignedData: step through the headers to the
    certificates field and slice out each certificate, copying nothing on the way
    (cryptography's PKCS#7 loader is about 40x slower than loading one certificate).

    None when the input is BER, has no plain certificates, or anything looks unusual: the
    caller then takes cryptography's path, which also gives the diagnostics.
    """
    header = asn1.read_header
    try:
        tag, start, end = header(data, 0)  # ContentInfo
        if tag != asn1.SEQUENCE or end != len(data):
            return None
        oid_end = start + len(_SIGNED_DATA_OID)
        if data[start:oid_end] != _SIGNED_DATA_OID:
            return None
        tag, start, stop = header(data, oid_end)  # content [0] EXPLICIT
        if tag != _A0 or stop != end:
            return None
        tag, offset, stop = header(data, start)  # SignedData
        if tag != asn1.SEQUENCE or stop != end:
            return None
        tag, start, offset = header(data, offset)  # version: CMSVersion 0..5
        if tag != asn1.INTEGER or offset - start != 1 or data[start] > 5:
            return None
        tag, start, offset = header(data, offset)  # digestAlgorithms: SET OF AlgorithmId
        if tag != asn1.SET or not _all_sequences(data, start, offset):
            return None
        tag, start, offset = header(data, offset)  # encapContentInfo: starts with its type
        if tag != asn1.SEQUENCE or start == offset or data[start] != asn1.OBJECT_IDENTIFIER:
            return None
        tag, offset, certs_end = header(data, offset)  # [0] IMPLICIT certificates
        if tag != _A0 or offset == certs_end:
            return None  # no certificates, or an empty set: cryptography decides
        ders = []
        while offset < certs_end:
            tag, _, next_offset = header(data, offset)
            if tag != asn1.SEQUENCE:  # another CertificateChoices
                return None
            ders.append(data[offset:next_offset])
            offset = next_offset
        if offset != certs_end:
            return None
        tag, start, offset = header(data, offset)
        if tag == _A1:  # crls
            tag, start, offset = header(data, offset)
        if tag != asn1.SET or offset != end:  # signerInfos, and nothing after it
            return None
        if not _all_sequences(data, start, offset):
            return None
        return ders
    except asn1.DerError:
        return None


def _all_sequences(data: bytes, start: int, end: int) -> bool:
    """Whether data[start:end] is a run of whole SEQUENCEs (or nothing)."""
    offset = start
    while offset < end:
        tag, _, offset = asn1.read_header(data, offset)
        if tag != asn1.SEQUENCE:
            return False
    return offset == end
