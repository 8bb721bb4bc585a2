"""Opening an encrypted key (client side, RFC 7030 s4.4.2): find the RecipientInfo meant
for our key, recover the content key, decrypt, and hand the SignedData to verifying."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

from .. import der, oids
from .cms import (
    AES_CBC_KEY_BYTES,
    AES_WRAP_KEY_BYTES,
    EC_PUBLIC_KEY,
    ECDH_SCHEMES,
    NULL,
    RSA_ENCRYPTION,
    KeyPackageError,
    ecdh_kek,
    explicit_0,
    explicit_any,
    fields_of,
    hash_for,
    octets,
    read_algorithm_id,
)
from .recipients import SharedKey, identifies
from .verifying import OpenedKey, verify


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
        return verify(content)
    except KeyPackageError:
        raise
    except der.DerError as exc:
        raise KeyPackageError(f"malformed: {exc}") from exc
    except (ValueError, LookupError, UnsupportedAlgorithm) as exc:
        # e.g. a carried certificate with an unknown key type, an unknown curve OID
        raise KeyPackageError(f"unusable content: {exc}") from exc


def _decrypt(
    data: bytes, key: PrivateKeyTypes | SharedKey, recipient: x509.Certificate | None
) -> bytes:
    outer = fields_of(der.read_one(data), "ContentInfo", 2)
    if der.decode_oid(outer[0]) != oids.ID_ENVELOPED_DATA:
        raise KeyPackageError("not an EnvelopedData")
    fields = fields_of(explicit_0(outer[1], "ContentInfo"), "EnvelopedData", 3)
    at = 2 if fields[1].is_context(0) else 1  # step over originatorInfo
    if len(fields) < at + 2 or not der.is_set(fields[at]):
        raise KeyPackageError("EnvelopedData: no recipientInfos")
    cek = _content_key(fields[at].children(), key, recipient)

    info = fields_of(fields[at + 1], "EncryptedContentInfo", 2)
    if der.decode_oid(info[0]) not in (oids.ID_SIGNED_DATA, oids.ID_DATA):
        raise KeyPackageError("enveloped content is not a SignedData")
    cipher, params = read_algorithm_id(info[1], "contentEncryptionAlgorithm")
    if cipher not in AES_CBC_KEY_BYTES:
        raise KeyPackageError(f"unsupported content cipher {cipher}")
    iv = octets(params, "AES-CBC IV") if params is not None else b""
    if len(iv) != 16:
        raise KeyPackageError("AES-CBC IV must be 16 bytes")
    if len(info) < 3 or not info[2].is_context(0):
        raise KeyPackageError("no encrypted content")
    ciphertext = octets(info[2], "encryptedContent")
    if len(cek) != AES_CBC_KEY_BYTES[cipher] or not ciphertext or len(ciphertext) % 16:
        raise KeyPackageError("cannot decrypt: wrong key or corrupted")
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise KeyPackageError("cannot decrypt: wrong key or corrupted") from exc


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
                fields = fields_of(info, "KeyTransRecipientInfo", 4)
                if recipient is None or identifies(fields[1], recipient):
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
    fields = fields_of(params, "RSAES-OAEP-params", 0) if params is not None else []
    for field in fields:
        if field.is_context(0):
            digest = hash_for(read_algorithm_id(explicit_any(field), "hashFunc")[0])
        elif field.is_context(1):
            mgf, mgf_params = read_algorithm_id(explicit_any(field), "maskGenFunc")
            if mgf != oids.MGF1 or mgf_params is None:
                raise KeyPackageError("OAEP mask generation must be MGF1")
            mgf_digest = hash_for(read_algorithm_id(mgf_params, "MGF1 hash")[0])
        elif field.is_context(2):
            source, source_params = read_algorithm_id(explicit_any(field), "pSourceFunc")
            if source != oids.P_SPECIFIED or source_params is None:
                raise KeyPackageError("OAEP pSource must be pSpecified")
            label = octets(source_params, "OAEP label") or None
    return asym_padding.OAEP(asym_padding.MGF1(mgf_digest), digest, label)


def _unwrap_transported(fields: list[der.Tlv], key: rsa.RSAPrivateKey) -> bytes:
    algorithm, params = read_algorithm_id(fields[2], "keyEncryptionAlgorithm")
    scheme: asym_padding.AsymmetricPadding
    if algorithm == RSA_ENCRYPTION:
        scheme = asym_padding.PKCS1v15()
    elif algorithm == oids.RSAES_OAEP:
        scheme = _oaep(params)
    else:
        raise KeyPackageError(f"unsupported key transport {algorithm}")
    try:
        return key.decrypt(octets(fields[3], "encryptedKey"), scheme)
    except ValueError as exc:
        raise KeyPackageError("cannot decrypt: wrong key or corrupted") from exc


def _unwrap_agreed(
    fields: list[der.Tlv], key: ec.EllipticCurvePrivateKey, recipient: x509.Certificate | None
) -> bytes | None:
    """The CEK from a KeyAgreeRecipientInfo, or None when it holds nothing for `recipient`."""
    if len(fields) < 4:
        raise KeyPackageError("KeyAgreeRecipientInfo: too few fields")
    at = 3 if fields[2].is_context(1) else 2
    ukm = octets(explicit_any(fields[2]), "ukm") if at == 3 else None
    if len(fields) != at + 2:
        raise KeyPackageError("KeyAgreeRecipientInfo: wrong number of fields")
    chosen = None
    for encrypted in fields_of(fields[at + 1], "recipientEncryptedKeys", 1):
        rid, wrapped = fields_of(encrypted, "RecipientEncryptedKey", 2)[:2]
        if recipient is None or identifies(rid, recipient):
            chosen = octets(wrapped, "encryptedKey")
            break
    if chosen is None:
        return None

    scheme, wrap_alg = read_algorithm_id(fields[at], "keyEncryptionAlgorithm")
    kdf_hash = ECDH_SCHEMES.get(scheme)
    if kdf_hash is None or wrap_alg is None:
        raise KeyPackageError(f"unsupported key agreement {scheme}")
    wrap = read_algorithm_id(wrap_alg, "key wrap algorithm")[0]
    if wrap not in AES_WRAP_KEY_BYTES:
        raise KeyPackageError(f"unsupported key wrap {wrap}")
    peer = _originator_key(explicit_0(fields[1], "originator"), key.curve)
    kek = ecdh_kek(
        key.exchange(ec.ECDH(), peer), kdf_hash(), wrap_alg.raw, ukm, AES_WRAP_KEY_BYTES[wrap]
    )
    try:
        return aes_key_unwrap(kek, chosen)
    except (InvalidUnwrap, ValueError) as exc:
        raise KeyPackageError("cannot decrypt: wrong key or corrupted") from exc


def _unwrap_kek(fields: list[der.Tlv], shared: SharedKey) -> bytes | None:
    """The CEK from a KEKRecipientInfo, or None when its keyIdentifier is another key's."""
    if len(fields) != 4:
        raise KeyPackageError("KEKRecipientInfo: wrong number of fields")
    kekid = fields_of(fields[1], "KEKIdentifier", 1)
    if octets(kekid[0], "keyIdentifier") != shared.key_id:
        return None
    if not fields[0].is_universal(der.INTEGER) or der.decode_integer(fields[0]) != 4:
        raise KeyPackageError("KEKRecipientInfo: version must be 4")
    wrap, params = read_algorithm_id(fields[2], "keyEncryptionAlgorithm")
    size = AES_WRAP_KEY_BYTES.get(wrap)
    # RFC 3565 s2.3.2: parameters absent; a NULL is tolerated as some writers add one.
    if size is None or (params is not None and params.raw != NULL):
        raise KeyPackageError(f"unsupported key wrap {wrap}")
    if size != len(shared.key):
        raise KeyPackageError(
            f"cannot decrypt: the envelope wants a {size}-byte KEK, "
            f"the shared key has {len(shared.key)} bytes"
        )
    try:
        return aes_key_unwrap(shared.key, octets(fields[3], "encryptedKey"))
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
    algorithm, params = read_algorithm_id(alg, "originatorKey algorithm")
    if algorithm != EC_PUBLIC_KEY:
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
