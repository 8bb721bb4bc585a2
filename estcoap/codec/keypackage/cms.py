"""The CMS building blocks sealing and opening share (RFC 5652, RFC 3565, RFC 5753).

The error every part raises, the algorithm tables (which content ciphers, key wraps,
digests, ECDH schemes and signatures are spoken), and small readers and writers over the
DER module: AlgorithmIdentifier, OCTET STRING (BER segments too), SEQUENCE fields,
explicit tags, ContentInfo, and the ECC-CMS-SharedInfo key derivation both ends run.

Why hand-written DER and not pyasn1-modules' RFC 5652 classes: no new dependency, the
parsers are bounded by hand (segment depth, field counts) for input from the network,
and the output is tested byte-exact against RFC vectors and openssl cms.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from .. import der, oids
from ..errors import CodecError


class KeyPackageError(CodecError):
    """An encrypted key package that cannot be built, opened or trusted."""


# -- algorithm tables (dotted OIDs, as der.decode_oid() reads them) -----------

# Content encryption (RFC 3565 s4.1) and key wrap (s2.3.2): their key lengths.
AES_CBC_KEY_BYTES = {oids.AES128_CBC: 16, oids.AES192_CBC: 24, oids.AES256_CBC: 32}
AES_WRAP_KEY_BYTES = {oids.AES128_WRAP: 16, oids.AES192_WRAP: 24, oids.AES256_WRAP: 32}
WRAP_FOR_KEK_BYTES = {size: wrap for wrap, size in AES_WRAP_KEY_BYTES.items()}
# The content ciphers we encrypt with, and the key wrap matching each one's strength.
WRAP_FOR_CONTENT = {oids.AES128_CBC: oids.AES128_WRAP, oids.AES256_CBC: oids.AES256_WRAP}

_HASH_FACTORIES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_HASHES = {oids.HASHES[name]: factory for name, factory in _HASH_FACTORIES.items()}
# ECDH key agreement schemes (RFC 5753 s7.1.4): the KDF hash each one uses.
ECDH_SCHEMES = {oids.ECDH_STD_SCHEMES[name]: f for name, f in _HASH_FACTORIES.items()}

ECDSA_WITH = {name: oid.dotted_string for name, oid in oids.ECDSA_WITH.items()}
RSA_WITH = {name: oid.dotted_string for name, oid in oids.RSA_WITH.items()}
RSA_ENCRYPTION = oids.RSA_ENCRYPTION.dotted_string
EC_PUBLIC_KEY = oids.EC_PUBLIC_KEY.dotted_string

NULL = der.tlv(der.NULL, b"")


# -- small DER helpers --------------------------------------------------------


def algorithm_id(dotted: str, parameters: bytes = b"") -> bytes:
    return der.sequence([der.oid(dotted), parameters])


def read_algorithm_id(item: der.Tlv, what: str) -> tuple[str, der.Tlv | None]:
    """(OID, parameters or None) of an AlgorithmIdentifier."""
    if not der.is_sequence(item):
        raise KeyPackageError(f"{what}: not an AlgorithmIdentifier")
    fields = item.children()
    if not fields or len(fields) > 2:
        raise KeyPackageError(f"{what}: not an AlgorithmIdentifier")
    return der.decode_oid(fields[0]), fields[1] if len(fields) == 2 else None


_MAX_SEGMENT_DEPTH = 4  # BER writers segment once; deeper nesting is an attack


def octets(item: der.Tlv, what: str, depth: int = 0) -> bytes:
    """An OCTET STRING's value, also accepting the constructed form some BER writers use."""
    if item.tag_class == der.CLASS_UNIVERSAL and item.number != der.OCTET_STRING:
        raise KeyPackageError(f"{what}: expected an OCTET STRING")
    if item.constructed:
        if depth >= _MAX_SEGMENT_DEPTH:
            raise KeyPackageError(f"{what}: OCTET STRING segments nested too deep")
        return b"".join(octets(part, what, depth + 1) for part in item.children())
    return item.content


def fields_of(item: der.Tlv, what: str, minimum: int) -> list[der.Tlv]:
    if not der.is_sequence(item):
        raise KeyPackageError(f"{what}: expected a SEQUENCE")
    fields = item.children()
    if len(fields) < minimum:
        raise KeyPackageError(f"{what}: too few fields")
    return fields


def explicit_0(item: der.Tlv, what: str) -> der.Tlv:
    """The one element inside an [0] EXPLICIT tag."""
    if not item.is_context(0) or not item.constructed:
        raise KeyPackageError(f"{what}: expected [0]")
    return der.read_one(item.content)


def explicit_any(item: der.Tlv) -> der.Tlv:
    if not item.constructed:
        raise KeyPackageError("expected an EXPLICIT tag")
    return der.read_one(item.content)


def content_info(content_type: str, content: bytes) -> bytes:
    return der.sequence([der.oid(content_type), der.context(0, content)])


def hash_for(dotted: str) -> hashes.HashAlgorithm:
    factory = _HASHES.get(dotted)
    if factory is None:
        raise KeyPackageError(f"unsupported hash {dotted}")
    return factory()


def ecdh_kek(
    shared_secret: bytes,
    kdf_hash: hashes.HashAlgorithm,
    wrap_alg: bytes,
    ukm: bytes | None,
    length: int,
) -> bytes:
    """The key-encryption key: X9.63 KDF over Z with ECC-CMS-SharedInfo (RFC 5753 s7.2)."""
    shared_info = der.sequence(
        [
            wrap_alg,
            der.context(0, der.octet_string(ukm)) if ukm is not None else b"",
            der.context(2, der.octet_string((length * 8).to_bytes(4, "big"))),
        ]
    )
    return X963KDF(algorithm=kdf_hash, length=length, sharedinfo=shared_info).derive(shared_secret)
