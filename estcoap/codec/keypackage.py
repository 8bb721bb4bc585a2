"""Encrypted server-generated keys (RFC 7030 s4.4.1.2 and s4.4.2).

The server signs an AsymmetricKeyPackage (RFC 5958) holding the new PKCS#8 key in a CMS
SignedData (RFC 5652, eContentType id-ct-KP-aKeyPackage), then encrypts that SignedData
to the client in a CMS EnvelopedData: key transport with RSAES-OAEP for RSA recipients
(RFC 4055), ephemeral-static ECDH with the X9.63 KDF and AES key wrap for EC recipients
(RFC 5753), or, when client and server share a symmetric key in advance (RFC 7030
s4.4.1.1, DecryptKeyIdentifier), a KEKRecipientInfo wrapping the content key with that
key (RFC 5652 s6.2.3, AES key wrap per RFC 3565). The ASN.1 is written and read with
the small DER module; every primitive comes from `cryptography`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from . import der, oids
from .errors import CodecError
from .keytypes import CmsPrivateKey, CmsPublicKey

# Public names of the OIDs callers pass in and compare with (dotted strings).
AES128_CBC = oids.AES128_CBC
AES192_CBC = oids.AES192_CBC
AES256_CBC = oids.AES256_CBC
ID_AA_ASYMM_DECRYPT_KEY_ID = oids.ID_AA_ASYMM_DECRYPT_KEY_ID  # OCTET STRING
ID_AA_DECRYPT_KEY_ID = oids.ID_AA_DECRYPT_KEY_ID  # OCTET STRING
ID_SMIME_CAPABILITIES = oids.ID_SMIME_CAPABILITIES

ID_DATA = oids.ID_DATA
ID_SIGNED_DATA = oids.ID_SIGNED_DATA
ID_ENVELOPED_DATA = oids.ID_ENVELOPED_DATA
ID_CT_KP_AKEY_PACKAGE = oids.ID_CT_KP_AKEY_PACKAGE
_ID_CONTENT_TYPE = oids.ID_CONTENT_TYPE
_ID_MESSAGE_DIGEST = oids.ID_MESSAGE_DIGEST

_RSA_ENCRYPTION = oids.RSA_ENCRYPTION.dotted_string
_RSAES_OAEP = oids.RSAES_OAEP
_MGF1 = oids.MGF1
_P_SPECIFIED = oids.P_SPECIFIED
_EC_PUBLIC_KEY = oids.EC_PUBLIC_KEY.dotted_string

_AES_CBC_KEY_BYTES = {AES128_CBC: 16, AES192_CBC: 24, AES256_CBC: 32}
_AES_WRAP_KEY_BYTES = {oids.AES128_WRAP: 16, oids.AES192_WRAP: 24, oids.AES256_WRAP: 32}
_WRAP_FOR_KEK_BYTES = {size: wrap for wrap, size in _AES_WRAP_KEY_BYTES.items()}
_WRAP_FOR_CONTENT = {AES128_CBC: oids.AES128_WRAP, AES256_CBC: oids.AES256_WRAP}

_HASH_OID = oids.HASHES
_HASH_FACTORIES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_HASHES = {_HASH_OID[name]: factory for name, factory in _HASH_FACTORIES.items()}

# ECDH key agreement schemes (RFC 5753 s7.1.4): the KDF hash each one uses.
_ECDH_SHA256_KDF = oids.ECDH_STD_SCHEMES["sha256"]
_ECDH_SCHEMES = {oids.ECDH_STD_SCHEMES[name]: f for name, f in _HASH_FACTORIES.items()}

# Signature algorithms: OID -> (key kind, hash; None means "the SignerInfo's digest").
_ECDSA_WITH = {name: oid.dotted_string for name, oid in oids.ECDSA_WITH.items()}
_RSA_WITH = {name: oid.dotted_string for name, oid in oids.RSA_WITH.items()}
_SIGNATURES: dict[str, tuple[str, str | None]] = {
    **{dotted: ("ec", name) for name, dotted in _ECDSA_WITH.items()},
    **{dotted: ("rsa", name) for name, dotted in _RSA_WITH.items()},
    _RSA_ENCRYPTION: ("rsa", None),  # what openssl writes for RSA signers
    _EC_PUBLIC_KEY: ("ec", None),
}

_NULL = der.tlv(der.NULL, b"")

PrivateKey = CmsPrivateKey
PublicKey = CmsPublicKey


class KeyPackageError(CodecError):
    """An encrypted key package that cannot be built, opened or trusted."""


@dataclass(frozen=True)
class OpenedKey:
    pkcs8: bytes  # the first OneAsymmetricKey of the package, as DER
    signer: x509.Certificate  # the certificate whose key verified the SignedData
    certificates: tuple[x509.Certificate, ...]  # all certificates the SignedData carried


# -- recipients ---------------------------------------------------------------


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

    public_key: PublicKey
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
        if not isinstance(public_key, PublicKey):
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
        if not isinstance(self.key, bytes) or len(self.key) not in _WRAP_FOR_KEK_BYTES:
            raise KeyPackageError("shared key must be 16, 24 or 32 bytes (AES key wrap)")


def _issuer_and_serial(certificate: x509.Certificate) -> bytes:
    """IssuerAndSerialNumber with the issuer Name exactly as the certificate encodes it."""
    fields = der.read_one(certificate.tbs_certificate_bytes).children()
    start = 1 if fields[0].is_context(0) else 0
    return der.sequence([fields[start + 2].raw, fields[start].raw])


# -- small DER helpers --------------------------------------------------------


def _alg(dotted: str, parameters: bytes = b"") -> bytes:
    return der.sequence([der.oid(dotted), parameters])


def _read_alg(item: der.Tlv, what: str) -> tuple[str, der.Tlv | None]:
    """(OID, parameters or None) of an AlgorithmIdentifier."""
    if not der.is_sequence(item):
        raise KeyPackageError(f"{what}: not an AlgorithmIdentifier")
    fields = item.children()
    if not fields or len(fields) > 2:
        raise KeyPackageError(f"{what}: not an AlgorithmIdentifier")
    return der.decode_oid(fields[0]), fields[1] if len(fields) == 2 else None


_MAX_SEGMENT_DEPTH = 4  # BER writers segment once; deeper nesting is an attack


def _octets(item: der.Tlv, what: str, depth: int = 0) -> bytes:
    """An OCTET STRING's value, also accepting the constructed form some BER writers use."""
    if item.tag_class == der.CLASS_UNIVERSAL and item.number != der.OCTET_STRING:
        raise KeyPackageError(f"{what}: expected an OCTET STRING")
    if item.constructed:
        if depth >= _MAX_SEGMENT_DEPTH:
            raise KeyPackageError(f"{what}: OCTET STRING segments nested too deep")
        return b"".join(_octets(part, what, depth + 1) for part in item.children())
    return item.content


def _sequence(item: der.Tlv, what: str, minimum: int) -> list[der.Tlv]:
    if not der.is_sequence(item):
        raise KeyPackageError(f"{what}: expected a SEQUENCE")
    fields = item.children()
    if len(fields) < minimum:
        raise KeyPackageError(f"{what}: too few fields")
    return fields


def _content_info(content_type: str, content: bytes) -> bytes:
    return der.sequence([der.oid(content_type), der.context(0, content)])


# -- sealing (server side) ----------------------------------------------------


def seal_key(
    pkcs8: bytes,
    *,
    signer_certificate: x509.Certificate,
    signer_key: PrivateKeyTypes,
    recipient: x509.Certificate | Recipient | SharedKey,
    content_cipher: str = AES128_CBC,
) -> bytes:
    """ContentInfo(EnvelopedData(SignedData(AsymmetricKeyPackage[pkcs8]))) as DER,
    signed by signer_key and encrypted to the recipient's key.

    The recipient is named by its subjectKeyIdentifier (subject_key_identifier() of a
    certificate). RSA recipients get a KeyTransRecipientInfo with RSAES-OAEP (SHA-256,
    MGF1-SHA-256); EC recipients on P-256/P-384/P-521 a KeyAgreeRecipientInfo with an
    ephemeral key, dhSinglePass-stdDH-sha256kdf-scheme and the AES key wrap matching the
    content cipher. A SharedKey gets a KEKRecipientInfo named by its key_id, the content
    key wrapped with id-aes128/192/256-wrap as the shared key's length dictates.
    """
    try:
        key_item = der.read_one(pkcs8)
    except der.DerError as exc:
        raise KeyPackageError(f"private key is not DER: {exc}") from exc
    if not der.is_sequence(key_item):
        raise KeyPackageError("private key is not a PKCS#8 SEQUENCE")
    if content_cipher not in _WRAP_FOR_CONTENT:
        raise KeyPackageError(f"unsupported content cipher {content_cipher}")
    if not isinstance(signer_key, PrivateKey):
        raise KeyPackageError("signer key must be EC or RSA")
    if isinstance(recipient, x509.Certificate):
        recipient = Recipient.of_certificate(recipient)
    package = der.sequence([pkcs8])  # AsymmetricKeyPackage: SEQUENCE OF OneAsymmetricKey
    signed = _signed_data(package, signer_certificate, signer_key)
    return _enveloped_data(signed, recipient, content_cipher)


def _signer_hash(key: PrivateKey) -> hashes.HashAlgorithm:
    """SHA-256, or the hash matching a P-384/P-521 key's strength."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA512() if key.curve.key_size > 384 else hashes.SHA384()
    return hashes.SHA256()


def _attribute(dotted: str, value: bytes) -> bytes:
    return der.sequence([der.oid(dotted), der.set_of([value])])


def _signed_data(content: bytes, certificate: x509.Certificate, key: PrivateKey) -> bytes:
    """SignedData (RFC 5652 s5) over an AsymmetricKeyPackage: one signer, signed attributes."""
    algorithm = _signer_hash(key)
    if key.public_key() != certificate.public_key():
        raise KeyPackageError("signer key does not match the signer certificate")
    digest = hashes.Hash(algorithm)
    digest.update(content)
    digest_alg = _alg(_HASH_OID[algorithm.name])
    signed_attrs = der.set_of(  # signed as a SET OF, sent as [0] IMPLICIT (RFC 5652 s5.4)
        [
            _attribute(_ID_CONTENT_TYPE, der.oid(ID_CT_KP_AKEY_PACKAGE)),
            _attribute(_ID_MESSAGE_DIGEST, der.octet_string(digest.finalize())),
        ]
    )
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(signed_attrs, ec.ECDSA(algorithm))
        signature_alg = _alg(_ECDSA_WITH[algorithm.name])
    else:
        signature = key.sign(signed_attrs, asym_padding.PKCS1v15(), algorithm)
        signature_alg = _alg(_RSA_WITH[algorithm.name], _NULL)
    signer_info = der.sequence(
        [
            der.integer(1),  # v1: sid is IssuerAndSerialNumber
            _issuer_and_serial(certificate),
            digest_alg,
            b"\xa0" + signed_attrs[1:],  # the same octets under the [0] tag
            signature_alg,
            der.octet_string(signature),
        ]
    )
    return der.sequence(
        [
            der.integer(3),  # eContentType is not id-data (RFC 5652 s5.1)
            der.set_of([digest_alg]),
            der.sequence(
                [der.oid(ID_CT_KP_AKEY_PACKAGE), der.context(0, der.octet_string(content))]
            ),
            der.context(0, certificate.public_bytes(serialization.Encoding.DER)),
            der.set_of([signer_info]),
        ]
    )


def _enveloped_data(content: bytes, recipient: Recipient | SharedKey, cipher: str) -> bytes:
    """ContentInfo(EnvelopedData) carrying a SignedData encrypted to one recipient."""
    cek = os.urandom(_AES_CBC_KEY_BYTES[cipher])
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(content) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()

    recipient_info: bytes
    if isinstance(recipient, SharedKey):
        recipient_info = _kek_recipient(recipient, cek)
    elif isinstance(recipient.public_key, rsa.RSAPublicKey):
        recipient_info = _key_transport(recipient.public_key, recipient.key_id, cek)
    else:
        recipient_info = _key_agreement(
            recipient.public_key, recipient.key_id, cek, _WRAP_FOR_CONTENT[cipher]
        )
    encrypted_content_info = der.sequence(
        [
            der.oid(ID_SIGNED_DATA),
            _alg(cipher, der.octet_string(iv)),
            der.context(0, ciphertext, constructed=False),
        ]
    )
    # Version 2 (RFC 5652 s6.1): no originatorInfo, no pwri/ori (which would make it 3),
    # and the one RecipientInfo is not v0 (ktri v2, kari v3, kekri v4).
    enveloped = der.sequence([der.integer(2), der.set_of([recipient_info]), encrypted_content_info])
    return _content_info(ID_ENVELOPED_DATA, enveloped)


def _oaep_sha256_params() -> bytes:
    sha256 = _alg(_HASH_OID["sha256"], _NULL)  # RFC 4055 s4.1 sha256Identifier
    return der.sequence([der.context(0, sha256), der.context(1, _alg(_MGF1, sha256))])


def _key_transport(public: rsa.RSAPublicKey, ski: bytes, cek: bytes) -> bytes:
    """KeyTransRecipientInfo v2 with rid [0] subjectKeyIdentifier and RSAES-OAEP-SHA256."""
    oaep = asym_padding.OAEP(asym_padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    return der.sequence(
        [
            der.integer(2),
            der.context(0, ski, constructed=False),
            _alg(_RSAES_OAEP, _oaep_sha256_params()),
            der.octet_string(_rsa_encrypt(public, cek, oaep)),
        ]
    )


def _rsa_encrypt(public: rsa.RSAPublicKey, data: bytes, oaep: asym_padding.OAEP) -> bytes:
    try:
        return public.encrypt(data, oaep)
    except ValueError as exc:  # the key is too small for the padding
        raise KeyPackageError(f"cannot encrypt to this RSA key: {exc}") from exc


def _kek(
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
    return X963KDF(algorithm=kdf_hash, length=length, sharedinfo=shared_info).derive(
        shared_secret
    )


def _key_agreement(public: ec.EllipticCurvePublicKey, ski: bytes, cek: bytes, wrap: str) -> bytes:
    """KeyAgreeRecipientInfo v3: ephemeral-static ECDH, SHA-256 X9.63 KDF, AES key wrap."""
    ephemeral = ec.generate_private_key(public.curve)
    shared_secret = ephemeral.exchange(ec.ECDH(), public)
    wrap_alg = _alg(wrap)  # AES key wrap takes no parameters (RFC 3565 s2.3.2)
    kek = _kek(shared_secret, hashes.SHA256(), wrap_alg, None, _AES_WRAP_KEY_BYTES[wrap])
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    # originatorKey: id-ecPublicKey with absent parameters, the curve is the recipient's.
    originator = der.context(0, der.context(1, _alg(_EC_PUBLIC_KEY) + der.bit_string(point)))
    encrypted_key = der.sequence(
        [der.context(0, der.octet_string(ski)), der.octet_string(aes_key_wrap(kek, cek))]
    )
    return der.context(
        1,
        der.integer(3)
        + originator
        + _alg(_ECDH_SHA256_KDF, wrap_alg)
        + der.sequence([encrypted_key]),
    )


def _kek_recipient(shared: SharedKey, cek: bytes) -> bytes:
    """kekri [2] IMPLICIT KEKRecipientInfo v4 (RFC 5652 s6.2.3): kekid holds only the
    keyIdentifier; the AES key wrap takes no parameters (RFC 3565 s2.3.2)."""
    return der.context(
        2,
        der.integer(4)
        + der.sequence([der.octet_string(shared.key_id)])
        + _alg(_WRAP_FOR_KEK_BYTES[len(shared.key)])
        + der.octet_string(aes_key_wrap(shared.key, cek)),
    )


# -- opening (client side) ----------------------------------------------------


def open_key(
    data: bytes,
    *,
    recipient_key: PrivateKeyTypes | None = None,
    recipient: x509.Certificate | None = None,
    shared_key: SharedKey | None = None,
) -> OpenedKey:
    """Decrypt an RFC 7030 s4.4.2 encrypted key and check the SignedData inside it.

    Exactly one of `recipient_key` (a private key) and `shared_key` must be given, and
    `recipient` only with `recipient_key`; any other combination is a caller's mistake
    and raises a plain ValueError (not KeyPackageError, which is about the bytes).
    With a private key, the RecipientInfo used is the one naming `recipient` (by
    subjectKeyIdentifier or IssuerAndSerialNumber) when it is given, else the first one
    of the kind the key can use. With a shared key, it is the KEKRecipientInfo whose
    keyIdentifier is shared_key.key_id. The signer must be among the SignedData's
    certificates and its signature must verify; whether that signer is trusted (chain
    validation) is the caller's decision. The encrypted content may be the bare
    SignedData under id-signedData (RFC 7030, and seal_key) or, as `openssl cms
    -encrypt` of a signed file makes it, a ContentInfo(SignedData) under id-data.
    """
    key: PrivateKeyTypes | SharedKey
    if shared_key is not None:
        if recipient_key is not None or recipient is not None:
            raise ValueError("give either recipient_key (and recipient) or shared_key")
        key = shared_key
    elif recipient_key is not None:
        key = recipient_key
    else:
        raise ValueError("one of recipient_key or shared_key is required")
    try:
        content = _decrypt(data, key, recipient)
        return _verify(content)
    except KeyPackageError:
        raise
    except der.DerError as exc:
        raise KeyPackageError(f"malformed: {exc}") from exc
    except (ValueError, LookupError, UnsupportedAlgorithm) as exc:
        # e.g. a carried certificate with an unknown key type, an unknown curve OID
        raise KeyPackageError(f"unusable content: {exc}") from exc


def _explicit(item: der.Tlv, what: str) -> der.Tlv:
    """The one element inside an [0] EXPLICIT tag."""
    if not item.is_context(0) or not item.constructed:
        raise KeyPackageError(f"{what}: expected [0]")
    return der.read_one(item.content)


def _decrypt(
    data: bytes, key: PrivateKeyTypes | SharedKey, recipient: x509.Certificate | None
) -> bytes:
    outer = _sequence(der.read_one(data), "ContentInfo", 2)
    if der.decode_oid(outer[0]) != ID_ENVELOPED_DATA:
        raise KeyPackageError("not an EnvelopedData")
    fields = _sequence(_explicit(outer[1], "ContentInfo"), "EnvelopedData", 3)
    at = 2 if fields[1].is_context(0) else 1  # step over originatorInfo
    if len(fields) < at + 2 or not der.is_set(fields[at]):
        raise KeyPackageError("EnvelopedData: no recipientInfos")
    cek = _content_key(fields[at].children(), key, recipient)

    info = _sequence(fields[at + 1], "EncryptedContentInfo", 2)
    if der.decode_oid(info[0]) not in (ID_SIGNED_DATA, ID_DATA):
        raise KeyPackageError("enveloped content is not a SignedData")
    cipher, params = _read_alg(info[1], "contentEncryptionAlgorithm")
    if cipher not in _AES_CBC_KEY_BYTES:
        raise KeyPackageError(f"unsupported content cipher {cipher}")
    iv = _octets(params, "AES-CBC IV") if params is not None else b""
    if len(iv) != 16:
        raise KeyPackageError("AES-CBC IV must be 16 bytes")
    if len(info) < 3 or not info[2].is_context(0):
        raise KeyPackageError("no encrypted content")
    ciphertext = _octets(info[2], "encryptedContent")
    if len(cek) != _AES_CBC_KEY_BYTES[cipher] or not ciphertext or len(ciphertext) % 16:
        raise KeyPackageError("cannot decrypt: wrong key or corrupted")
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise KeyPackageError("cannot decrypt: wrong key or corrupted") from exc


def _names(rid: der.Tlv, recipient: x509.Certificate) -> bool:
    """Whether a RecipientIdentifier / KeyAgreeRecipientIdentifier names the certificate."""
    if der.is_sequence(rid):
        return rid.raw == _issuer_and_serial(recipient)
    if rid.is_context(0):
        if rid.constructed:  # rKeyId RecipientKeyIdentifier { subjectKeyIdentifier, ... }
            fields = rid.children()
            if not fields:
                raise KeyPackageError("rKeyId: no subjectKeyIdentifier")
            ski = _octets(fields[0], "subjectKeyIdentifier")
        else:  # subjectKeyIdentifier [0] IMPLICIT
            ski = rid.content
        return ski == subject_key_identifier(recipient)
    return False


def _content_key(
    recipient_infos: list[der.Tlv],
    key: PrivateKeyTypes | SharedKey,
    recipient: x509.Certificate | None,
) -> bytes:
    """The content-encryption key from the RecipientInfo meant for this key."""
    if isinstance(key, SharedKey):
        for info in recipient_infos:
            if info.is_context(2) and info.constructed:  # kekri [2]
                found = _unwrap_kek(info.children(), key)
                if found is not None:
                    return found
    elif isinstance(key, rsa.RSAPrivateKey):
        for info in recipient_infos:
            if der.is_sequence(info):  # ktri is the untagged alternative
                fields = _sequence(info, "KeyTransRecipientInfo", 4)
                if recipient is None or _names(fields[1], recipient):
                    return _unwrap_transported(fields, key)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        for info in recipient_infos:
            if info.is_context(1) and info.constructed:  # kari [1]
                found = _unwrap_agreed(info.children(), key, recipient)
                if found is not None:
                    return found
    else:
        raise KeyPackageError("recipient key must be RSA or EC")
    raise KeyPackageError("no RecipientInfo for this key")


def _oaep(params: der.Tlv | None) -> asym_padding.OAEP:
    """RSAES-OAEP-params (RFC 4055 s4.1); absent fields take the SHA-1 defaults."""
    digest: hashes.HashAlgorithm = hashes.SHA1()
    mgf_digest: hashes.HashAlgorithm = hashes.SHA1()
    label: bytes | None = None
    fields = _sequence(params, "RSAES-OAEP-params", 0) if params is not None else []
    for field in fields:
        if field.is_context(0):
            digest = _hash(_read_alg(_explicit_any(field), "hashFunc")[0])
        elif field.is_context(1):
            mgf, mgf_params = _read_alg(_explicit_any(field), "maskGenFunc")
            if mgf != _MGF1 or mgf_params is None:
                raise KeyPackageError("OAEP mask generation must be MGF1")
            mgf_digest = _hash(_read_alg(mgf_params, "MGF1 hash")[0])
        elif field.is_context(2):
            source, source_params = _read_alg(_explicit_any(field), "pSourceFunc")
            if source != _P_SPECIFIED or source_params is None:
                raise KeyPackageError("OAEP pSource must be pSpecified")
            label = _octets(source_params, "OAEP label") or None
    return asym_padding.OAEP(asym_padding.MGF1(mgf_digest), digest, label)


def _explicit_any(item: der.Tlv) -> der.Tlv:
    if not item.constructed:
        raise KeyPackageError("expected an EXPLICIT tag")
    return der.read_one(item.content)


def _hash(dotted: str) -> hashes.HashAlgorithm:
    factory = _HASHES.get(dotted)
    if factory is None:
        raise KeyPackageError(f"unsupported hash {dotted}")
    return factory()


def _unwrap_transported(fields: list[der.Tlv], key: rsa.RSAPrivateKey) -> bytes:
    algorithm, params = _read_alg(fields[2], "keyEncryptionAlgorithm")
    scheme: asym_padding.AsymmetricPadding
    if algorithm == _RSA_ENCRYPTION:
        scheme = asym_padding.PKCS1v15()
    elif algorithm == _RSAES_OAEP:
        scheme = _oaep(params)
    else:
        raise KeyPackageError(f"unsupported key transport {algorithm}")
    try:
        return key.decrypt(_octets(fields[3], "encryptedKey"), scheme)
    except ValueError as exc:
        raise KeyPackageError("cannot decrypt: wrong key or corrupted") from exc


def _unwrap_agreed(
    fields: list[der.Tlv], key: ec.EllipticCurvePrivateKey, recipient: x509.Certificate | None
) -> bytes | None:
    """The CEK from a KeyAgreeRecipientInfo, or None when it holds nothing for `recipient`."""
    if len(fields) < 4:
        raise KeyPackageError("KeyAgreeRecipientInfo: too few fields")
    at = 3 if fields[2].is_context(1) else 2
    ukm = _octets(_explicit_any(fields[2]), "ukm") if at == 3 else None
    if len(fields) != at + 2:
        raise KeyPackageError("KeyAgreeRecipientInfo: wrong number of fields")
    chosen = None
    for encrypted in _sequence(fields[at + 1], "recipientEncryptedKeys", 1):
        rid, wrapped = _sequence(encrypted, "RecipientEncryptedKey", 2)[:2]
        if recipient is None or _names(rid, recipient):
            chosen = _octets(wrapped, "encryptedKey")
            break
    if chosen is None:
        return None

    scheme, wrap_alg = _read_alg(fields[at], "keyEncryptionAlgorithm")
    kdf_hash = _ECDH_SCHEMES.get(scheme)
    if kdf_hash is None or wrap_alg is None:
        raise KeyPackageError(f"unsupported key agreement {scheme}")
    wrap = _read_alg(wrap_alg, "key wrap algorithm")[0]
    if wrap not in _AES_WRAP_KEY_BYTES:
        raise KeyPackageError(f"unsupported key wrap {wrap}")
    peer = _originator_key(_explicit(fields[1], "originator"), key.curve)
    kek = _kek(
        key.exchange(ec.ECDH(), peer), kdf_hash(), wrap_alg.raw, ukm, _AES_WRAP_KEY_BYTES[wrap]
    )
    try:
        return aes_key_unwrap(kek, chosen)
    except (InvalidUnwrap, ValueError) as exc:
        raise KeyPackageError("cannot decrypt: wrong key or corrupted") from exc


def _unwrap_kek(fields: list[der.Tlv], shared: SharedKey) -> bytes | None:
    """The CEK from a KEKRecipientInfo, or None when its keyIdentifier is another key's."""
    if len(fields) != 4:
        raise KeyPackageError("KEKRecipientInfo: wrong number of fields")
    kekid = _sequence(fields[1], "KEKIdentifier", 1)
    if _octets(kekid[0], "keyIdentifier") != shared.key_id:
        return None
    if not fields[0].is_universal(der.INTEGER) or der.decode_integer(fields[0]) != 4:
        raise KeyPackageError("KEKRecipientInfo: version must be 4")
    wrap, params = _read_alg(fields[2], "keyEncryptionAlgorithm")
    size = _AES_WRAP_KEY_BYTES.get(wrap)
    # RFC 3565 s2.3.2: parameters absent; a NULL is tolerated as some writers add one.
    if size is None or (params is not None and params.raw != _NULL):
        raise KeyPackageError(f"unsupported key wrap {wrap}")
    if size != len(shared.key):
        raise KeyPackageError(
            f"cannot decrypt: the envelope wants a {size}-byte KEK, "
            f"the shared key has {len(shared.key)} bytes"
        )
    try:
        return aes_key_unwrap(shared.key, _octets(fields[3], "encryptedKey"))
    except (InvalidUnwrap, ValueError) as exc:
        raise KeyPackageError("cannot decrypt: wrong key or corrupted") from exc


def _originator_key(item: der.Tlv, curve: ec.EllipticCurve) -> ec.EllipticCurvePublicKey:
    """The ephemeral originatorKey [1], read on the recipient's curve (RFC 5753 s7.1.3)."""
    if not item.is_context(1) or not item.constructed:
        raise KeyPackageError("only ephemeral-static ECDH (originatorKey) is supported")
    fields = item.children()  # [1] IMPLICIT OriginatorPublicKey { algorithm, publicKey }
    if len(fields) != 2:
        raise KeyPackageError("originatorKey: expected algorithm and publicKey")
    alg, bits = fields
    algorithm, params = _read_alg(alg, "originatorKey algorithm")
    if algorithm != _EC_PUBLIC_KEY:
        raise KeyPackageError("originatorKey is not an EC key")
    if params is not None and params.is_universal(der.OBJECT_IDENTIFIER):
        named = der.decode_oid(params)
        if ec.get_curve_for_oid(x509.ObjectIdentifier(named)).name != curve.name:
            raise KeyPackageError("originatorKey is on another curve than the recipient key")
    if not bits.is_universal(der.BIT_STRING) or bits.content[:1] != b"\x00":
        raise KeyPackageError("originatorKey: bad public key BIT STRING")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, bits.content[1:])
    except ValueError as exc:
        raise KeyPackageError("originatorKey is not a point on the recipient's curve") from exc


# -- the SignedData -----------------------------------------------------------


def _verify(content: bytes) -> OpenedKey:
    """Check the signed AsymmetricKeyPackage and return its first key and the signer."""
    item = der.read_one(content)
    fields = _sequence(item, "SignedData", 2)
    if fields[0].is_universal(der.OBJECT_IDENTIFIER):
        # openssl envelopes the ContentInfo it wrote, not the bare SignedData.
        if der.decode_oid(fields[0]) != ID_SIGNED_DATA:
            raise KeyPackageError("enveloped content is not a SignedData")
        item = _explicit(fields[1], "ContentInfo")
    fields = _sequence(item, "SignedData", 4)
    encap = _sequence(fields[2], "encapContentInfo", 1)
    content_type = der.decode_oid(encap[0])
    if content_type != ID_CT_KP_AKEY_PACKAGE:
        raise KeyPackageError("not an aKeyPackage")
    if len(encap) < 2:
        raise KeyPackageError("no encapsulated key package")
    package = _octets(_explicit(encap[1], "eContent"), "eContent")

    certificates = _certificates(fields[3]) if fields[3].is_context(0) else ()
    signer_infos = fields[-1]
    if not der.is_set(signer_infos) or not signer_infos.children():
        raise KeyPackageError("no SignerInfo")
    # Every signer must verify; the first one is reported.
    signers = [
        _check_signer(info, content_type, package, certificates)
        for info in signer_infos.children()
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
    keys = _sequence(der.read_one(package), "AsymmetricKeyPackage", 1)
    if not der.is_sequence(keys[0]):
        raise KeyPackageError("AsymmetricKeyPackage: not a OneAsymmetricKey")
    return keys[0].raw


def _signer_certificate(
    sid: der.Tlv, certificates: tuple[x509.Certificate, ...]
) -> x509.Certificate:
    for certificate in certificates:
        if _names(sid, certificate):
            return certificate
    raise KeyPackageError("signer certificate is not in the SignedData")


def _signed_attributes(item: der.Tlv) -> dict[str, bytes]:
    """attrType -> the single value's TLV, for contentType and messageDigest."""
    found: dict[str, bytes] = {}
    for attribute in item.children():
        kind, values = _sequence(attribute, "Attribute", 2)[:2]
        dotted = der.decode_oid(kind)
        if dotted in (_ID_CONTENT_TYPE, _ID_MESSAGE_DIGEST):
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
    fields = _sequence(info, "SignerInfo", 6)
    certificate = _signer_certificate(fields[1], certificates)
    digest_alg = _hash(_read_alg(fields[2], "digestAlgorithm")[0])
    if not fields[3].is_context(0) or not fields[3].constructed:
        raise KeyPackageError("no signed attributes")
    attributes = _signed_attributes(fields[3])
    if _ID_CONTENT_TYPE not in attributes or _ID_MESSAGE_DIGEST not in attributes:
        raise KeyPackageError("contentType or messageDigest attribute missing")
    if attributes[_ID_CONTENT_TYPE] != der.oid(content_type):
        raise KeyPackageError("contentType attribute does not match eContentType")
    digest = hashes.Hash(digest_alg)
    digest.update(package)
    if attributes[_ID_MESSAGE_DIGEST] != der.octet_string(digest.finalize()):
        raise KeyPackageError("messageDigest does not match the content")

    signed = b"\x31" + fields[3].raw[1:]  # verified as the SET OF (RFC 5652 s5.4)
    signature = _octets(fields[5], "signature")
    algorithm = _read_alg(fields[4], "signatureAlgorithm")[0]
    if algorithm not in _SIGNATURES:
        raise KeyPackageError(f"unsupported signature algorithm {algorithm}")
    kind, hash_name = _SIGNATURES[algorithm]
    signature_hash = _hash(_HASH_OID[hash_name]) if hash_name else digest_alg
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


# -- CSR attributes asking for an encrypted key ------------------------------


def asymmetric_decrypt_key_id_attribute(key_id: bytes) -> bytes:
    """DER of the PKCS#10 Attribute AsymmetricDecryptKeyIdentifier (RFC 7030 s4.4.1.2):
    the subjectKeyIdentifier of the key the server is to encrypt the new key for."""
    return der.sequence(
        [der.oid(ID_AA_ASYMM_DECRYPT_KEY_ID), der.set_of([der.octet_string(key_id)])]
    )


def decrypt_key_id_attribute(key_id: bytes) -> bytes:
    """DER of the PKCS#10 Attribute DecryptKeyIdentifier (RFC 7030 s4.4.1.1, RFC 4108):
    the identifier of the symmetric key, shared in advance, to encrypt the new key with."""
    return der.sequence([der.oid(ID_AA_DECRYPT_KEY_ID), der.set_of([der.octet_string(key_id)])])


def smime_capabilities_attribute(ciphers: Sequence[str] = (AES128_CBC,)) -> bytes:
    """A PKCS#10 Attribute listing the content ciphers the client accepts, best first."""
    try:
        capabilities = der.sequence([der.sequence([der.oid(cipher)]) for cipher in ciphers])
    except der.DerError as exc:
        raise KeyPackageError(f"bad capability: {exc}") from exc
    return der.sequence([der.oid(ID_SMIME_CAPABILITIES), der.set_of([capabilities])])


def smime_capabilities(attribute_values: bytes) -> list[str]:
    """The capability OIDs, in order, from an smimeCapabilities Attribute's values SET."""
    try:
        values = der.read_one(attribute_values)
        if not der.is_set(values):
            raise KeyPackageError("smimeCapabilities: values must be a SET")
        found = []
        for value in values.children():
            for capability in _sequence(value, "SMIMECapabilities", 0):
                found.append(der.decode_oid(_sequence(capability, "SMIMECapability", 1)[0]))
        return found
    except der.DerError as exc:
        raise KeyPackageError(f"smimeCapabilities: {exc}") from exc


def key_identifier(attribute_values: bytes, name: str) -> bytes:
    """The key id of a (Asymmetric)DecryptKeyIdentifier Attribute: its values SET holds
    one non-empty OCTET STRING. `name` is the attribute's, for the diagnostic."""
    try:
        values = der.read_one(attribute_values)
        children = values.children() if der.is_set(values) else []
    except der.DerError as exc:
        raise KeyPackageError(f"{name} must hold one value in a SET: {exc}") from exc
    if len(children) != 1:
        raise KeyPackageError(f"{name} must hold one value in a SET")
    (value,) = children
    if not value.is_universal(der.OCTET_STRING) or value.constructed or not value.content:
        raise KeyPackageError(f"{name} must be a non-empty OCTET STRING")
    return value.content


def choose_content_cipher(capabilities: Sequence[str]) -> str | None:
    """The first capability we can encrypt with; AES-128-CBC when none were stated."""
    if not capabilities:
        return AES128_CBC
    return next((cipher for cipher in capabilities if cipher in _WRAP_FOR_CONTENT), None)
