"""The end-entity certificate profile: what a CSR may ask for and what gets signed.

The CSR supplies the subject, the public key and the subjectAltName; everything
else comes from policy here. A CSR asking for more than policy allows is refused
when the ask is critical or dangerous (CA:TRUE), and quietly trimmed otherwise.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, ExtensionOID

from ..codec.keytypes import PrivateKey, PublicKey
from ..codec.pkcs10 import Csr
from ..service import BadRequest, Forbidden
from .keys import signature_hash

SERIAL_BITS = 128
MIN_RSA_BITS = 2048
_EC_CURVES_ACCEPTED = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)

# Requested extensions this CA understands; the profile decides their final values.
_UNDERSTOOD = {
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
}


def random_serial() -> int:
    """A random positive serial in a 128-bit field.

    The top bit of the 16 octets is cleared so the DER INTEGER needs no 0x00
    pad and stays within 16 content octets (RFC 5280 allows 20); 127 random bits
    remain, far beyond collision range, and the store's UNIQUE constraint
    catches the impossible case. Zero is not a valid serial, so it is redrawn.
    """
    while True:
        serial = secrets.randbits(SERIAL_BITS) & ~(1 << (SERIAL_BITS - 1))
        if serial:
            return serial


@dataclass(frozen=True)
class Request:
    """What survives policy from a CSR: the subject, the key and the SAN to copy."""

    subject: x509.Name
    public_key: PublicKey
    san: x509.SubjectAlternativeName | None


def vet_csr(csr: Csr, *, check_key: bool = True) -> Request:
    """Apply policy to a CSR's requested extensions and key. Raises Forbidden or BadRequest.

    check_key=False for serverkeygen, where the CSR's key only hints at the type wanted.
    """
    extensions = csr.extensions
    for ext in extensions:
        if ext.oid == ExtensionOID.BASIC_CONSTRAINTS and ext.value.ca:
            raise Forbidden(
                "CSR asks for a CA certificate (basicConstraints CA:TRUE); "
                "this CA issues end-entity certificates only"
            )
        if ext.critical and ext.oid not in _UNDERSTOOD:
            raise Forbidden(
                f"CSR requests an unsupported critical extension {ext.oid.dotted_string}"
            )
    if check_key:
        check_public_key(csr.public_key)
    san = csr.subject_alt_name
    if len(csr.subject) == 0 and san is None:
        raise BadRequest("CSR has neither a subject nor a subjectAltName")
    return Request(subject=csr.subject, public_key=csr.public_key, san=san)


def check_public_key(public_key: object) -> None:
    """Refuse keys this CA does not certify (weak RSA, unusual curves, unknown types)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise Forbidden(f"RSA keys shorter than {MIN_RSA_BITS} bits are refused")
        return
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, _EC_CURVES_ACCEPTED):
            raise Forbidden(f"elliptic curve {public_key.curve.name} is not accepted")
        return
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return
    raise Forbidden(f"public key type {type(public_key).__name__} is not accepted")


def key_usage_for(public_key: object) -> x509.KeyUsage:
    """digitalSignature for every key; RSA adds keyEncipherment, EC keyAgreement (for TLS 1.2)."""
    is_rsa = isinstance(public_key, rsa.RSAPublicKey)
    is_ec = isinstance(public_key, ec.EllipticCurvePublicKey)
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=is_rsa,
        data_encipherment=False,
        key_agreement=is_ec,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def sign_end_entity(
    request: Request,
    *,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    serial: int,
    validity_days: int,
    extended_key_usage: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    extensions: Sequence[x509.ExtensionType] = (),
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Sign the profile's end-entity certificate for a vetted request. extensions: more,
    non-critical ones (where to check revocation: revocation_pointers())."""
    now = now or dt.datetime.now(dt.UTC)
    # Backdate a little for clock skew between CA and relying parties.
    not_before = now - dt.timedelta(minutes=5)
    not_after = min(now + dt.timedelta(days=validity_days), ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(request.subject)
        .issuer_name(ca_cert.subject)
        .public_key(request.public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage_for(request.public_key), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(extended_key_usage)), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(request.public_key), critical=False
        )
        .add_extension(authority_key_id(ca_cert), critical=False)
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    if request.san is not None:
        # RFC 5280 s4.2.1.6: the SAN is critical when the subject is empty.
        builder = builder.add_extension(request.san, critical=len(request.subject) == 0)
    return builder.sign(ca_key, signature_hash(ca_key))  # type: ignore[arg-type]


def revocation_pointers(
    crl_url: str | None = None, ocsp_url: str | None = None
) -> tuple[x509.ExtensionType, ...]:
    """Where relying parties learn whether a certificate was revoked: a CRL distribution
    point (RFC 5280 s4.2.1.13) and an OCSP responder in the authority information access
    (s4.2.2.1), each when its URL is given."""
    pointers: list[x509.ExtensionType] = []
    if crl_url:
        point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(crl_url)],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        pointers.append(x509.CRLDistributionPoints([point]))
    if ocsp_url:
        access = x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
        )
        pointers.append(x509.AuthorityInformationAccess([access]))
    return tuple(pointers)


def authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """From the CA's subject key identifier (what its own certificate declares), else
    from its public key: what certificates and CRLs name their issuer's key by."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
