"""PKCS#10 certification requests: parse, check the signature, expose what EST needs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import AttributeOID, ExtensionOID

from . import b64
from .errors import Base64Error, CsrError

_PEM_MARKERS = (b"-----BEGIN CERTIFICATE REQUEST-----", b"-----BEGIN NEW CERTIFICATE REQUEST-----")


@dataclass(frozen=True)
class Csr:
    """A parsed, signature-checked PKCS#10 request. Build with parse_csr()."""

    der: bytes
    request: x509.CertificateSigningRequest

    @property
    def subject(self) -> x509.Name:
        return self.request.subject

    @property
    def public_key(self):  # type: ignore[no-untyped-def]
        return self.request.public_key()

    @cached_property
    def public_key_der(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @cached_property
    def extensions(self) -> x509.Extensions:
        """The extensions requested through the extensionRequest attribute."""
        try:
            return self.request.extensions
        except (ValueError, x509.DuplicateExtension) as exc:
            raise CsrError(f"CSR extensionRequest is malformed: {exc}") from exc

    @cached_property
    def subject_alt_name(self) -> x509.SubjectAlternativeName | None:
        try:
            ext = self.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        except x509.ExtensionNotFound:
            return None
        return ext.value  # type: ignore[return-value]

    @cached_property
    def challenge_password(self) -> bytes | None:
        """The raw challengePassword attribute value, or None when absent."""
        try:
            return self.request.attributes.get_attribute_for_oid(
                AttributeOID.CHALLENGE_PASSWORD
            ).value
        except x509.AttributeNotFound:
            return None

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    @property
    def signature_hash(self) -> hashes.HashAlgorithm | None:
        return self.request.signature_hash_algorithm


def parse_csr(data: bytes, *, check_signature: bool = True) -> Csr:
    """Parse a CSR given as DER, PEM or base64 (RFC 7030 body) and check its signature.

    Raises CsrError with a short diagnostic for anything that is not a valid request.
    """
    if not data or not data.strip():
        raise CsrError("CSR is empty")
    der = _to_der(data)
    try:
        request = x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise CsrError(f"CSR is not a valid PKCS#10 structure: {exc}") from exc
    csr = Csr(der=der, request=request)
    if check_signature:
        try:
            valid = request.is_signature_valid
        except Exception as exc:  # unsupported key or algorithm
            raise CsrError(f"CSR signature cannot be checked: {exc}") from exc
        if not valid:
            raise CsrError("CSR signature does not verify (or uses a refused hash such as SHA-1)")
    return csr


def _to_der(data: bytes) -> bytes:
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN"):
        if not stripped.startswith(_PEM_MARKERS):
            raise CsrError("PEM block is not a CERTIFICATE REQUEST")
        lines = stripped.splitlines()
        if len(lines) < 3 or not lines[-1].startswith(b"-----END"):
            raise CsrError("PEM block is truncated")
        try:
            return b64.decode(b"".join(lines[1:-1]))
        except Base64Error as exc:
            raise CsrError(f"PEM body is not base64: {exc}") from exc
    if stripped[:1] == b"\x30":  # a DER SEQUENCE
        return data
    try:
        return b64.decode(data)
    except Base64Error as exc:
        raise CsrError(f"CSR is neither DER, PEM nor base64: {exc}") from exc
