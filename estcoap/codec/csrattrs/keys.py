"""The key and signature a server asks for: KeyRequest (an algorithm with an EC curve or
an RSA size), how it is written as a csrattrs item or a template's AlgorithmIdentifier,
and the signature hashes a server may name (SHA-2 only)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurve
from cryptography.x509.oid import ObjectIdentifier

from .. import der, oids
from ..errors import CsrAttrsError
from .items import (
    OID_EC_PUBLIC_KEY,
    OID_RSA_ENCRYPTION,
    CsrAttribute,
    CsrAttrItem,
    CsrAttrOid,
    read_oid,
)

EDWARDS = (oids.ED25519, oids.ED448)

# The SHA-2 hashes a server may name, bare or as a signature algorithm (not SHA-1).
_SHA2: dict[str, type[hashes.HashAlgorithm]] = {
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
HASH_BY_OID: dict[str, type[hashes.HashAlgorithm]] = {
    **{oids.HASHES[name]: factory for name, factory in _SHA2.items()},
    **{oids.ECDSA_WITH[name].dotted_string: factory for name, factory in _SHA2.items()},
    **{oids.RSA_WITH[name].dotted_string: factory for name, factory in _SHA2.items()},
}
_ECDSA_BY_HASH = {name: oids.ECDSA_WITH[name] for name in _SHA2}
_RSA_BY_HASH = {name: oids.RSA_WITH[name] for name in _SHA2}
_HASH_OID_BY_NAME = {name: oids.HASHES[name] for name in _SHA2}


@dataclass(frozen=True)
class KeyRequest:
    """The key a server asks for: an algorithm OID plus an EC curve or an RSA size."""

    algorithm: ObjectIdentifier
    curve: ObjectIdentifier | None = None
    bits: int | None = None

    @classmethod
    def ec(cls, curve: ObjectIdentifier | EllipticCurve | None = None) -> KeyRequest:
        if isinstance(curve, EllipticCurve):
            curve = _curve_oid(curve)
        return cls(OID_EC_PUBLIC_KEY, curve=curve)

    @classmethod
    def rsa(cls, bits: int | None = None) -> KeyRequest:
        return cls(OID_RSA_ENCRYPTION, bits=bits)

    @property
    def kind(self) -> str:
        """ "ec", "rsa", "ed25519", "ed448" or "other"."""
        return {
            OID_EC_PUBLIC_KEY: "ec",
            OID_RSA_ENCRYPTION: "rsa",
            oids.ED25519: "ed25519",
            oids.ED448: "ed448",
        }.get(self.algorithm, "other")

    def ec_curve(self) -> EllipticCurve | None:
        """The cryptography curve for the requested curve OID, when it knows it."""
        if self.curve is None:
            return None
        try:
            return ec.get_curve_for_oid(self.curve)()
        except LookupError:
            return None


def is_curve(oid: ObjectIdentifier) -> bool:
    try:
        ec.get_curve_for_oid(oid)
    except LookupError:
        return False
    return True


def _curve_oid(curve: EllipticCurve) -> ObjectIdentifier:
    for oid_name in dir(ec.EllipticCurveOID):
        if oid_name.startswith("_"):
            continue
        oid = getattr(ec.EllipticCurveOID, oid_name)
        try:
            if ec.get_curve_for_oid(oid).name == curve.name:
                return oid
        except LookupError:
            continue
    raise CsrAttrsError(f"no OID known for curve {curve.name}")


def key_item(key: KeyRequest) -> CsrAttrItem:
    if key.algorithm == OID_EC_PUBLIC_KEY and key.curve is not None:
        return CsrAttribute(OID_EC_PUBLIC_KEY, (der.oid(key.curve.dotted_string),))
    if key.algorithm == OID_RSA_ENCRYPTION and key.bits is not None:
        return CsrAttribute(OID_RSA_ENCRYPTION, (der.integer(key.bits),))
    return CsrAttrOid(key.algorithm)


def key_from_algorithm(algorithm: bytes, placeholder: bytes | None) -> KeyRequest:
    fields = der.read_one(algorithm).children()
    oid = read_oid(fields[0])
    if oid == OID_EC_PUBLIC_KEY:
        params = fields[1] if len(fields) > 1 else None
        if params is not None and params.is_universal(der.OBJECT_IDENTIFIER):
            return KeyRequest.ec(read_oid(params))
        return KeyRequest.ec()
    if oid == OID_RSA_ENCRYPTION:
        return KeyRequest.rsa(_rsa_placeholder_bits(placeholder))
    return KeyRequest(oid)


def _rsa_placeholder_bits(placeholder: bytes | None) -> int | None:
    """Modulus size of the dummy RSAPublicKey an RFC 9908 template uses as a size hint."""
    if placeholder is None:
        return None
    try:
        bits = der.read_one(placeholder).content[1:]
        modulus = der.read_one(bits).children()[0]
    except (der.DerError, IndexError):
        return None
    if not modulus.is_universal(der.INTEGER):
        return None
    raw = modulus.content
    if len(raw) > 1 and raw[0] == 0:
        raw = raw[1:]
    if not raw:
        return None
    # A placeholder may be all zeros; its length still states the size.
    if raw[0] & 0x80 or not any(raw):
        return len(raw) * 8
    return int.from_bytes(raw, "big").bit_length()


def key_to_algorithm(key: KeyRequest) -> tuple[bytes, bytes | None]:
    if key.algorithm == OID_EC_PUBLIC_KEY:
        params = [der.oid(key.curve.dotted_string)] if key.curve else []
        return der.sequence([der.oid(OID_EC_PUBLIC_KEY.dotted_string), *params]), None
    if key.algorithm == OID_RSA_ENCRYPTION:
        rsa_oid = der.oid(OID_RSA_ENCRYPTION.dotted_string)
        algorithm = der.sequence([rsa_oid, der.tlv(der.NULL, b"")])
        if key.bits is None:
            return algorithm, None
        modulus = 1 << (key.bits - 1)  # only its length matters
        dummy = der.sequence([der.integer(modulus), der.integer(65537)])
        return algorithm, der.bit_string(dummy)
    return der.sequence([der.oid(key.algorithm.dotted_string)]), None


def signature_oid(algorithm: hashes.HashAlgorithm, key: KeyRequest | None) -> ObjectIdentifier:
    table = {"ec": _ECDSA_BY_HASH, "rsa": _RSA_BY_HASH}.get(key.kind if key else "", None)
    if table is not None and algorithm.name in table:
        return table[algorithm.name]
    if algorithm.name in _HASH_OID_BY_NAME:
        return ObjectIdentifier(_HASH_OID_BY_NAME[algorithm.name])
    raise CsrAttrsError(f"no OID for signature hash {algorithm.name}")
