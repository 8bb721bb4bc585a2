"""Where a certificate's or a CSR's SubjectPublicKeyInfo sits, found by stepping over DER
headers. Matching an issued certificate to its CSR by these bytes takes a few
microseconds, where loading and re-encoding both keys with cryptography takes about 25.

index_of_key is the one answer to "which of the returned certificates is ours", for the
client and the gateway alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from . import der


def of_certificate(certificate_der: bytes) -> bytes | None:
    """The SubjectPublicKeyInfo TLV of a Certificate, as encoded; None if it is not found.

    TBSCertificate: [0] version (optional), serial, signature, issuer, validity, subject,
    then subjectPublicKeyInfo.
    """
    return _find(certificate_der, depth=2, skip=None)


def of_csr(csr_der: bytes) -> bytes | None:
    """The SubjectPublicKeyInfo TLV of a CertificationRequest, as encoded.

    CertificationRequestInfo: version, subject, then subjectPKInfo.
    """
    return _find(csr_der, depth=2, skip=2)


def public_key_der(
    holder: x509.Certificate | x509.CertificateSigningRequest | PrivateKeyTypes,
) -> bytes:
    """The SubjectPublicKeyInfo of a certificate's, a CSR's or a private key's public key,
    re-encoded by cryptography: equal for equal keys, whatever encoding they came in."""
    return holder.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def index_of_key(
    certificates: Sequence[tuple[x509.Certificate, bytes]],
    encoded_key: bytes | None,
    public_key: Callable[[], bytes | None],
) -> int | None:
    """Which of the (certificate, DER) pairs is for our key: its index, else None.

    encoded_key: our SubjectPublicKeyInfo as we encoded it (of_csr gives it from the CSR),
    compared with each certificate's as the CA encoded it. public_key: our key re-encoded
    (public_key_der), asked for only when no encoding matched, to compare by value: a
    key whose encodings differ (a compressed EC point) is still found.
    """
    if encoded_key is not None:
        for index, (_, certificate_der) in enumerate(certificates):
            if of_certificate(certificate_der) == encoded_key:
                return index
    wanted = public_key()
    if wanted is None:
        return None
    for index, (certificate, _) in enumerate(certificates):
        if public_key_der(certificate) == wanted:
            return index
    return None


def _find(data: bytes, *, depth: int, skip: int | None) -> bytes | None:
    """Enter `depth` SEQUENCEs, step over `skip` elements (None: a certificate's, whose
    version is optional), and return the SEQUENCE found there."""
    try:
        offset = 0
        for _ in range(depth):
            tag, offset, _ = der.read_header(data, offset)
            if tag != der.SEQUENCE:
                return None
        if skip is None:
            skip = 6 if data[offset] == 0xA0 else 5
        for _ in range(skip):
            _, _, offset = der.read_header(data, offset)
        tag, _, end = der.read_header(data, offset)
    except (der.DerError, IndexError):
        return None
    return data[offset:end] if tag == der.SEQUENCE else None
