"""Who a key package is for: a public key named by its key identifier, or a shared key.

subject_key_identifier() names a certificate's key (RFC 5280 s4.2.1.2); identifies()
tells whether a RecipientIdentifier or a SignerIdentifier names a certificate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from .. import der
from ..keytypes import CmsPublicKey
from .cms import WRAP_FOR_KEK_BYTES, KeyPackageError, octets


def subject_key_identifier(certificate: x509.Certificate) -> bytes:
    """The certificate's SubjectKeyIdentifier extension value; without one, RFC 5280
    s4.2.1.2 method 1 (SHA-1 of the subjectPublicKey BIT STRING contents)."""
    try:
        ext = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return ext.value.digest
    except x509.ExtensionNotFound:
        return _method_1(certificate.public_key())


def _method_1(public_key: PublicKeyTypes) -> bytes:
    """RFC 5280 s4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING contents."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest  # type: ignore[arg-type]


MIN_RSA_RECIPIENT_BITS = 2048


@dataclass(frozen=True)
class Recipient:
    """A key to envelope for and the subjectKeyIdentifier naming it in the RecipientInfo.

    A certificate is not needed: RFC 7030 s4.4.1.2 lets the client name the key of its
    CSR, which has no certificate yet.
    """

    public_key: CmsPublicKey
    key_id: bytes

    def __post_init__(self) -> None:
        key = self.public_key
        if isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1):
                raise KeyPackageError(f"unsupported recipient curve {key.curve.name}")
        elif not isinstance(key, rsa.RSAPublicKey):
            raise KeyPackageError("recipient key must be RSA or EC (P-256, P-384, P-521)")
        elif key.key_size < MIN_RSA_RECIPIENT_BITS:
            # A private key must not travel under a weaker key than it; smaller ones also
            # cannot carry a content key under OAEP-SHA-256 at all (below about 784 bits).
            raise KeyPackageError(
                f"RSA recipient key of {key.key_size} bits is too small:"
                f" at least {MIN_RSA_RECIPIENT_BITS} are needed"
            )

    @classmethod
    def of_certificate(cls, certificate: x509.Certificate) -> Recipient:
        return cls._of(certificate.public_key(), lambda: subject_key_identifier(certificate))

    @classmethod
    def of_public_key(cls, public_key: PublicKeyTypes) -> Recipient:
        """Named by its RFC 5280 method-1 key identifier."""
        return cls._of(public_key, lambda: _method_1(public_key))

    @classmethod
    def _of(cls, public_key: object, key_id: Callable[[], bytes]) -> Recipient:
        if not isinstance(public_key, CmsPublicKey):
            raise KeyPackageError("recipient key must be RSA or EC (P-256, P-384, P-521)")
        return cls(public_key, key_id())


@dataclass(frozen=True)
class SharedKey:
    """A symmetric key-encryption key shared in advance, and the identifier both sides
    know it by (RFC 7030 s4.4.1.1). The key is an AES key-wrap KEK: 16, 24 or 32 bytes."""

    key_id: bytes
    key: bytes = dataclasses.field(repr=False)  # a secret: kept out of reprs and logs

    def __post_init__(self) -> None:
        if not isinstance(self.key_id, bytes) or not self.key_id:
            raise KeyPackageError("shared key identifier must be non-empty bytes")
        if not isinstance(self.key, bytes) or len(self.key) not in WRAP_FOR_KEK_BYTES:
            raise KeyPackageError("shared key must be 16, 24 or 32 bytes (AES key wrap)")


def issuer_and_serial(certificate: x509.Certificate) -> bytes:
    """IssuerAndSerialNumber with the issuer Name exactly as the certificate encodes it."""
    fields = der.read_one(certificate.tbs_certificate_bytes).children()
    start = 1 if fields[0].is_context(0) else 0
    return der.sequence([fields[start + 2].raw, fields[start].raw])


def identifies(rid: der.Tlv, recipient: x509.Certificate) -> bool:
    """Whether a RecipientIdentifier / KeyAgreeRecipientIdentifier names the certificate."""
    if der.is_sequence(rid):
        return rid.raw == issuer_and_serial(recipient)
    if rid.is_context(0):
        if rid.constructed:  # rKeyId RecipientKeyIdentifier { subjectKeyIdentifier, ... }
            fields = rid.children()
            if not fields:
                raise KeyPackageError("rKeyId: no subjectKeyIdentifier")
            ski = octets(fields[0], "subjectKeyIdentifier")
        else:  # subjectKeyIdentifier [0] IMPLICIT
            ski = rid.content
        return ski == subject_key_identifier(recipient)
    return False
