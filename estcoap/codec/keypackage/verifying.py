"""Checking the SignedData inside an opened envelope (RFC 5652 s5.4 and s5.6): the
encapsulated AsymmetricKeyPackage, the signed attributes and every signer's signature.
Whether the signer is trusted (its chain) is the caller's decision."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding

from .. import der, oids
from .cms import (
    EC_PUBLIC_KEY,
    ECDSA_WITH,
    RSA_ENCRYPTION,
    RSA_WITH,
    KeyPackageError,
    explicit_0,
    fields_of,
    hash_for,
    octets,
    read_algorithm_id,
)
from .recipients import identifies

# Signature algorithms: OID -> (key kind, hash; None means "the SignerInfo's digest").
_SIGNATURES: dict[str, tuple[str, str | None]] = {
    **{dotted: ("ec", name) for name, dotted in ECDSA_WITH.items()},
    **{dotted: ("rsa", name) for name, dotted in RSA_WITH.items()},
    RSA_ENCRYPTION: ("rsa", None),  # what openssl writes for RSA signers
    EC_PUBLIC_KEY: ("ec", None),
}


@dataclass(frozen=True)
class OpenedKey:
    pkcs8: bytes  # the first OneAsymmetricKey of the package, as DER
    signer: x509.Certificate  # the certificate whose key verified the SignedData
    certificates: tuple[x509.Certificate, ...]  # all certificates the SignedData carried


def verify(content: bytes) -> OpenedKey:
    """Check the signed AsymmetricKeyPackage and return its first key and the signer."""
    item = der.read_one(content)
    fields = fields_of(item, "SignedData", 2)
    if fields[0].is_universal(der.OBJECT_IDENTIFIER):
        # openssl envelopes the ContentInfo it wrote, not the bare SignedData.
        if der.decode_oid(fields[0]) != oids.ID_SIGNED_DATA:
            raise KeyPackageError("enveloped content is not a SignedData")
        item = explicit_0(fields[1], "ContentInfo")
    fields = fields_of(item, "SignedData", 4)
    encap = fields_of(fields[2], "encapContentInfo", 1)
    content_type = der.decode_oid(encap[0])
    if content_type != oids.ID_CT_KP_AKEY_PACKAGE:
        raise KeyPackageError("not an aKeyPackage")
    if len(encap) < 2:
        raise KeyPackageError("no encapsulated key package")
    package = octets(explicit_0(encap[1], "eContent"), "eContent")

    certificates = _certificates(fields[3]) if fields[3].is_context(0) else ()
    signer_infos = fields[-1]
    if not der.is_set(signer_infos) or not signer_infos.children():
        raise KeyPackageError("no SignerInfo")
    # Every signer must verify; the first one is reported.
    signers = [
        _check_signer(info, content_type, package, certificates) for info in signer_infos.children()
    ]
    return OpenedKey(_first_key(package), signers[0], certificates)


def _certificates(item: der.Tlv) -> tuple[x509.Certificate, ...]:
    found = []
    for choice in item.children():
        if der.is_sequence(choice):  # other alternatives (attribute certs) are tagged
            try:
                found.append(x509.load_der_x509_certificate(choice.raw))
            except (ValueError, x509.InvalidVersion) as exc:
                raise KeyPackageError("unreadable certificate in the SignedData") from exc
    return tuple(found)


def _first_key(package: bytes) -> bytes:
    keys = fields_of(der.read_one(package), "AsymmetricKeyPackage", 1)
    if not der.is_sequence(keys[0]):
        raise KeyPackageError("AsymmetricKeyPackage: not a OneAsymmetricKey")
    return keys[0].raw


def _signer_certificate(
    sid: der.Tlv, certificates: tuple[x509.Certificate, ...]
) -> x509.Certificate:
    for certificate in certificates:
        if identifies(sid, certificate):
            return certificate
    raise KeyPackageError("signer certificate is not in the SignedData")


def _signed_attributes(item: der.Tlv) -> dict[str, bytes]:
    """attrType -> the single value's TLV, for contentType and messageDigest."""
    found: dict[str, bytes] = {}
    for attribute in item.children():
        kind, values = fields_of(attribute, "Attribute", 2)[:2]
        dotted = der.decode_oid(kind)
        if dotted in (oids.ID_CONTENT_TYPE, oids.ID_MESSAGE_DIGEST):
            members = values.children() if der.is_set(values) else []
            if dotted in found or len(members) != 1:
                raise KeyPackageError("contentType/messageDigest must each have one value")
            found[dotted] = members[0].raw
    return found


def _check_signer(
    info: der.Tlv,
    content_type: str,
    package: bytes,
    certificates: tuple[x509.Certificate, ...],
) -> x509.Certificate:
    fields = fields_of(info, "SignerInfo", 6)
    certificate = _signer_certificate(fields[1], certificates)
    digest_alg = hash_for(read_algorithm_id(fields[2], "digestAlgorithm")[0])
    if not fields[3].is_context(0) or not fields[3].constructed:
        raise KeyPackageError("no signed attributes")
    attributes = _signed_attributes(fields[3])
    if oids.ID_CONTENT_TYPE not in attributes or oids.ID_MESSAGE_DIGEST not in attributes:
        raise KeyPackageError("contentType or messageDigest attribute missing")
    if attributes[oids.ID_CONTENT_TYPE] != der.oid(content_type):
        raise KeyPackageError("contentType attribute does not match eContentType")
    digest = hashes.Hash(digest_alg)
    digest.update(package)
    if attributes[oids.ID_MESSAGE_DIGEST] != der.octet_string(digest.finalize()):
        raise KeyPackageError("messageDigest does not match the content")

    signed = b"\x31" + fields[3].raw[1:]  # verified as the SET OF (RFC 5652 s5.4)
    signature = octets(fields[5], "signature")
    algorithm = read_algorithm_id(fields[4], "signatureAlgorithm")[0]
    if algorithm not in _SIGNATURES:
        raise KeyPackageError(f"unsupported signature algorithm {algorithm}")
    kind, hash_name = _SIGNATURES[algorithm]
    signature_hash = hash_for(oids.HASHES[hash_name]) if hash_name else digest_alg
    public = certificate.public_key()
    try:
        if kind == "ec" and isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, signed, ec.ECDSA(signature_hash))
        elif kind == "rsa" and isinstance(public, rsa.RSAPublicKey):
            public.verify(signature, signed, asym_padding.PKCS1v15(), signature_hash)
        else:
            raise KeyPackageError("signature algorithm does not fit the signer's key")
    except (InvalidSignature, ValueError) as exc:
        if isinstance(exc, KeyPackageError):
            raise
        raise KeyPackageError("signature does not verify") from exc
    return certificate
