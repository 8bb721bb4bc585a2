"""PKCS#10 certification requests: parse, check the signature, expose what EST needs."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import AttributeOID, ExtensionOID

from . import b64, der
from .errors import Base64Error, CsrError

_CHALLENGE_PASSWORD_OID = der.oid(AttributeOID.CHALLENGE_PASSWORD.dotted_string)
_PEM_MARKERS = (b"-----BEGIN CERTIFICATE REQUEST-----", b"-----BEGIN NEW CERTIFICATE REQUEST-----")


@dataclass(frozen=True)
class Csr:
    """A parsed, signature-checked PKCS#10 request. Build with parse_csr().

    Fields are read once and cached: cryptography decodes the subject and loads the
    public key afresh on every call (about 5 and 8 us).
    """

    der: bytes
    request: x509.CertificateSigningRequest

    @cached_property
    def subject(self) -> x509.Name:
        try:
            return self.request.subject
        except ValueError as exc:
            raise CsrError(f"CSR is not a valid PKCS#10 structure: {exc}") from exc

    @cached_property
    def public_key(self):
        try:
            return self.request.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise CsrError(f"CSR public key is unusable: {exc}") from exc

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
        if _CHALLENGE_PASSWORD_OID not in self.der:
            # No attribute can name it without these bytes: skip cryptography's lookup,
            # whose not-found path (an exception built and caught) costs about 4 us.
            return None
        try:
            return self.request.attributes.get_attribute_for_oid(
                AttributeOID.CHALLENGE_PASSWORD
            ).value
        except x509.AttributeNotFound:
            return None
        except ValueError as exc:
            raise CsrError(f"CSR attributes are malformed: {exc}") from exc

    @cached_property
    def attributes(self) -> dict[str, bytes]:
        """Each attribute's `values` SET as DER, by its dotted type, read from the request
        as sent (cryptography's own reader refuses values it does not know)."""
        try:
            info = der.read_one(der.read_one(self.der).children()[0].raw).children()
            if len(info) < 4 or not info[3].is_context(0):
                return {}
            found = {}
            for attribute in info[3].children():
                kind, values = attribute.children()
                found[der.decode_oid(kind)] = values.raw
            return found
        except (der.DerError, IndexError, ValueError) as exc:
            raise CsrError(f"CSR attributes are malformed: {exc}") from exc

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    @property
    def signature_hash(self) -> hashes.HashAlgorithm | None:
        """The signature's hash; None for EdDSA. Unknown algorithms are a CsrError."""
        try:
            return self.request.signature_hash_algorithm
        except UnsupportedAlgorithm as exc:
            raise CsrError(f"CSR signature algorithm is not supported: {exc}") from exc


def parse_csr(data: bytes, *, check_signature: bool = True) -> Csr:
    """Parse a CSR given as DER, PEM or base64 (RFC 7030 body) and check its signature.

    Raises CsrError with a short diagnostic for anything that is not a valid request.
    """
    if not data or not data.strip():
        raise CsrError("CSR is empty")
    der_bytes = _to_der(data)
    _check_framing(der_bytes)
    try:
        request = x509.load_der_x509_csr(der_bytes)
    except (ValueError, x509.InvalidVersion) as exc:
        raise CsrError(f"CSR is not a valid PKCS#10 structure: {exc}") from exc
    csr = Csr(der=der_bytes, request=request)
    if not check_signature:
        # A proxy that forwards the CSR (the gateway) reads one or two fields of it, and
        # its upstream checks the rest: each field is decoded when first read (the key
        # alone costs ~16 us), and a malformed one is a CsrError then.
        return csr
    # Read now what every service reads later, so a malformed field fails here as a CsrError.
    try:
        _ = (csr.subject, csr.public_key_der, csr.extensions, csr.challenge_password)
    except CsrError:
        raise
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # what cryptography raises
        raise CsrError(f"CSR is not a valid PKCS#10 structure: {exc}") from exc
    _check_signature(request)
    return csr


def _check_framing(data: bytes) -> None:
    """Say plainly when the outer DER is cut short or followed by garbage."""
    try:
        _, end = der.read_tlv(data, 0)
    except der.DerError as exc:
        raise CsrError(f"CSR is not DER: {exc}") from exc
    if end != len(data):
        raise CsrError(f"CSR has {len(data) - end} trailing bytes after the DER structure")


def _check_signature(request: x509.CertificateSigningRequest) -> None:
    try:
        algorithm = request.signature_hash_algorithm
    except Exception as exc:  # an algorithm cryptography does not know
        raise CsrError(f"CSR signature algorithm is not supported: {exc}") from exc
    if isinstance(algorithm, hashes.SHA1 | hashes.MD5):
        raise CsrError(
            f"CSR is signed with {algorithm.name.upper()}, which is refused as too weak;"
            " sign it with SHA-256 or better"
        )
    try:
        valid = request.is_signature_valid
    except Exception as exc:  # unsupported key or algorithm
        raise CsrError(f"CSR signature cannot be checked: {exc}") from exc
    if not valid:
        raise CsrError("CSR signature does not verify: altered, or not signed by its own key")


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
    if data[:1] == b"\x30":  # a DER SEQUENCE
        return data
    try:
        return b64.decode(data)
    except Base64Error as exc:
        raise CsrError(f"CSR is neither DER, PEM nor base64: {exc}") from exc


# -- building ------------------------------------------------------------------

# PrintableString's alphabet (X.680); base64 of tls-unique fits in it.
_PRINTABLE = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?"
)


def build_csr(
    private_key: CertificateIssuerPrivateKeyTypes,
    subject: x509.Name,
    *,
    sans: Sequence[x509.GeneralName] = (),
    challenge_password: bytes | None = None,
    extensions: x509.Extensions | None = None,
    signature_hash: hashes.HashAlgorithm | None = None,
) -> bytes:
    """DER of a PKCS#10 request signed by private_key.

    challenge_password is emitted as a PrintableString when its characters allow
    (as RFC 7030 A.3 does), else as a UTF8String. sans become a subjectAltName
    extension unless extensions already carry one.
    """
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    carried = {ext.oid for ext in extensions} if extensions is not None else set()
    if sans and ExtensionOID.SUBJECT_ALTERNATIVE_NAME not in carried:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    for ext in extensions or ():
        builder = builder.add_extension(ext.value, critical=ext.critical)
    if challenge_password is not None:
        if not challenge_password:
            raise CsrError("challengePassword must not be empty")
        tag = _ASN1Type.PrintableString if set(challenge_password) <= _PRINTABLE else None
        builder = builder.add_attribute(
            AttributeOID.CHALLENGE_PASSWORD, challenge_password, _tag=tag
        )
    algorithm = signature_hash or default_signature_hash(private_key)
    try:
        request = builder.sign(private_key, algorithm)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise CsrError(f"cannot build the CSR: {exc}") from exc
    return request.public_bytes(serialization.Encoding.DER)


def add_attributes(
    csr_der: bytes,
    private_key: CertificateIssuerPrivateKeyTypes,
    attributes: Sequence[bytes],
) -> bytes:
    """The CSR with more attributes (each a DER Attribute), signed again by private_key
    with the CSR's own signature algorithm.

    For attributes cryptography's builder cannot write (its values are strings only),
    such as SMIMECapabilities (RFC 7030 s4.4.1.2).
    """
    try:
        original = x509.load_der_x509_csr(csr_der)
        algorithm = original.signature_hash_algorithm
        parameters = original.signature_algorithm_parameters
        request, algorithm_id, _ = der.read_one(csr_der).children()
        fields = request.children()
        version, subject, spki = fields[:3]
        existing = [a.raw for a in fields[3].children()] if len(fields) > 3 else []
    except (der.DerError, ValueError, UnsupportedAlgorithm) as exc:
        raise CsrError(f"CSR is not a valid PKCS#10 structure: {exc}") from exc
    info = der.sequence(
        [
            version.raw,
            subject.raw,
            spki.raw,
            der.context(0, b"".join(sorted([*existing, *attributes]))),
        ]
    )
    signature = _sign(private_key, info, algorithm, parameters)
    return der.sequence([info, algorithm_id.raw, der.bit_string(signature)])


def _sign(
    private_key: CertificateIssuerPrivateKeyTypes,
    data: bytes,
    algorithm: hashes.HashAlgorithm | None,
    parameters: object,
) -> bytes:
    """Sign as the original request was signed (same hash; PSS or PKCS#1 v1.5 for RSA)."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(algorithm))  # type: ignore[arg-type]
    if isinstance(private_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return private_key.sign(data)
    if isinstance(private_key, rsa.RSAPrivateKey):
        scheme = parameters if isinstance(parameters, padding.PSS) else padding.PKCS1v15()
        return private_key.sign(data, scheme, algorithm)  # type: ignore[arg-type]
    raise CsrError(f"cannot sign a CSR with a {type(private_key).__name__}")


def default_signature_hash(
    private_key: CertificateIssuerPrivateKeyTypes,
) -> hashes.HashAlgorithm | None:
    """SHA-2 sized to the key: P-384 -> SHA-384, P-521 -> SHA-512, else SHA-256; None for EdDSA."""
    if isinstance(private_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        size = private_key.curve.key_size
        if size > 384:
            return hashes.SHA512()
        if size > 256:
            return hashes.SHA384()
    return hashes.SHA256()
