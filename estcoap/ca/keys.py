"""Key types the CA knows: generate them, name them, pick the matching signature hash."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ..codec.keytypes import PrivateKey

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072")
DEFAULT_KEY_TYPE = "ec-p256"

_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ec-p256": ec.SECP256R1,
    "ec-p384": ec.SECP384R1,
    "ec-p521": ec.SECP521R1,
}
_RSA_BITS = {"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}
# Everything generate_key() accepts; KEY_TYPES is the advertised subset for CA keys.
ALL_KEY_TYPES = (*_CURVES, *_RSA_BITS, "ed25519")


def generate_key(key_type: str) -> PrivateKey:
    """A fresh private key of the named type (see KEY_TYPES)."""
    if key_type in _CURVES:
        return ec.generate_private_key(_CURVES[key_type]())
    if key_type in _RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[key_type])
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def key_type_of(public_key: object) -> str | None:
    """The key-type name of a public key, or None when this CA has no name for it."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        for name, curve in _CURVES.items():
            if isinstance(public_key.curve, curve):
                return name
        return None
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa-{public_key.key_size}" if public_key.key_size in _RSA_BITS.values() else None
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    return None


def signature_hash(private_key: PrivateKey) -> hashes.HashAlgorithm | None:
    """The hash to sign with: matched to the curve strength; None for Ed25519 (built in)."""
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        if private_key.curve.key_size >= 521:
            return hashes.SHA512()
        if private_key.curve.key_size >= 384:
            return hashes.SHA384()
    return hashes.SHA256()
