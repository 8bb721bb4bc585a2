"""Sealing a server-generated key (server side, RFC 7030 s4.4.2).

ContentInfo(EnvelopedData(SignedData(AsymmetricKeyPackage))): the key is signed
(RFC 5652 s5, RFC 5958), then encrypted to one recipient with AES-CBC under a fresh
content key that travels as a KeyTransRecipientInfo (RSAES-OAEP, RFC 4055), a
KeyAgreeRecipientInfo (ephemeral-static ECDH, RFC 5753) or a KEKRecipientInfo (a key
shared in advance, RFC 5652 s6.2.3).
"""

from __future__ import annotations

import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from .. import der, oids
from ..keytypes import CmsPrivateKey
from .cms import (
    AES_CBC_KEY_BYTES,
    AES_WRAP_KEY_BYTES,
    EC_PUBLIC_KEY,
    ECDSA_WITH,
    NULL,
    RSA_WITH,
    WRAP_FOR_CONTENT,
    WRAP_FOR_KEK_BYTES,
    KeyPackageError,
    algorithm_id,
    content_info,
    ecdh_kek,
)
from .recipients import Recipient, SharedKey, issuer_and_serial

_ECDH_SHA256_KDF = oids.ECDH_STD_SCHEMES["sha256"]  # dhSinglePass-stdDH-sha256kdf-scheme


def seal_key(
    pkcs8: bytes,
    *,
    signer_certificate: x509.Certificate,
    signer_key: PrivateKeyTypes,
    recipient: x509.Certificate | Recipient | SharedKey,
    content_cipher: str = oids.AES128_CBC,
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
    if content_cipher not in WRAP_FOR_CONTENT:
        raise KeyPackageError(f"unsupported content cipher {content_cipher}")
    if not isinstance(signer_key, CmsPrivateKey):
        raise KeyPackageError("signer key must be EC or RSA")
    if isinstance(recipient, x509.Certificate):
        recipient = Recipient.of_certificate(recipient)
    package = der.sequence([pkcs8])  # AsymmetricKeyPackage: SEQUENCE OF OneAsymmetricKey
    signed = _signed_data(package, signer_certificate, signer_key)
    return enveloped_data(signed, recipient, content_cipher)


def _signer_hash(key: CmsPrivateKey) -> hashes.HashAlgorithm:
    """SHA-256, or the hash matching a P-384/P-521 key's strength."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA512() if key.curve.key_size > 384 else hashes.SHA384()
    return hashes.SHA256()


def _attribute(dotted: str, value: bytes) -> bytes:
    return der.sequence([der.oid(dotted), der.set_of([value])])


def _signed_data(content: bytes, certificate: x509.Certificate, key: CmsPrivateKey) -> bytes:
    """SignedData (RFC 5652 s5) over an AsymmetricKeyPackage: one signer, signed attributes."""
    algorithm = _signer_hash(key)
    if key.public_key() != certificate.public_key():
        raise KeyPackageError("signer key does not match the signer certificate")
    digest = hashes.Hash(algorithm)
    digest.update(content)
    digest_alg = algorithm_id(oids.HASHES[algorithm.name])
    signed_attrs = der.set_of(  # signed as a SET OF, sent as [0] IMPLICIT (RFC 5652 s5.4)
        [
            _attribute(oids.ID_CONTENT_TYPE, der.oid(oids.ID_CT_KP_AKEY_PACKAGE)),
            _attribute(oids.ID_MESSAGE_DIGEST, der.octet_string(digest.finalize())),
        ]
    )
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(signed_attrs, ec.ECDSA(algorithm))
        signature_alg = algorithm_id(ECDSA_WITH[algorithm.name])
    else:
        signature = key.sign(signed_attrs, asym_padding.PKCS1v15(), algorithm)
        signature_alg = algorithm_id(RSA_WITH[algorithm.name], NULL)
    signer_info = der.sequence(
        [
            der.integer(1),  # v1: sid is IssuerAndSerialNumber
            issuer_and_serial(certificate),
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
                [der.oid(oids.ID_CT_KP_AKEY_PACKAGE), der.context(0, der.octet_string(content))]
            ),
            der.context(0, certificate.public_bytes(serialization.Encoding.DER)),
            der.set_of([signer_info]),
        ]
    )


def enveloped_data(content: bytes, recipient: Recipient | SharedKey, cipher: str) -> bytes:
    """ContentInfo(EnvelopedData) carrying a SignedData encrypted to one recipient."""
    cek = os.urandom(AES_CBC_KEY_BYTES[cipher])
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
            recipient.public_key, recipient.key_id, cek, WRAP_FOR_CONTENT[cipher]
        )
    encrypted_content_info = der.sequence(
        [
            der.oid(oids.ID_SIGNED_DATA),
            algorithm_id(cipher, der.octet_string(iv)),
            der.context(0, ciphertext, constructed=False),
        ]
    )
    # Version 2 (RFC 5652 s6.1): no originatorInfo, no pwri/ori (which would make it 3),
    # and the one RecipientInfo is not v0 (ktri v2, kari v3, kekri v4).
    enveloped = der.sequence([der.integer(2), der.set_of([recipient_info]), encrypted_content_info])
    return content_info(oids.ID_ENVELOPED_DATA, enveloped)


def _oaep_sha256_params() -> bytes:
    sha256 = algorithm_id(oids.HASHES["sha256"], NULL)  # RFC 4055 s4.1 sha256Identifier
    return der.sequence([der.context(0, sha256), der.context(1, algorithm_id(oids.MGF1, sha256))])


def _key_transport(public: rsa.RSAPublicKey, ski: bytes, cek: bytes) -> bytes:
    """KeyTransRecipientInfo v2 with rid [0] subjectKeyIdentifier and RSAES-OAEP-SHA256."""
    oaep = asym_padding.OAEP(asym_padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
    return der.sequence(
        [
            der.integer(2),
            der.context(0, ski, constructed=False),
            algorithm_id(oids.RSAES_OAEP, _oaep_sha256_params()),
            der.octet_string(_rsa_encrypt(public, cek, oaep)),
        ]
    )


def _rsa_encrypt(public: rsa.RSAPublicKey, data: bytes, oaep: asym_padding.OAEP) -> bytes:
    try:
        return public.encrypt(data, oaep)
    except ValueError as exc:  # the key is too small for the padding
        raise KeyPackageError(f"cannot encrypt to this RSA key: {exc}") from exc


def _key_agreement(public: ec.EllipticCurvePublicKey, ski: bytes, cek: bytes, wrap: str) -> bytes:
    """KeyAgreeRecipientInfo v3: ephemeral-static ECDH, SHA-256 X9.63 KDF, AES key wrap."""
    ephemeral = ec.generate_private_key(public.curve)
    shared_secret = ephemeral.exchange(ec.ECDH(), public)
    wrap_alg = algorithm_id(wrap)  # AES key wrap takes no parameters (RFC 3565 s2.3.2)
    kek = ecdh_kek(shared_secret, hashes.SHA256(), wrap_alg, None, AES_WRAP_KEY_BYTES[wrap])
    point = ephemeral.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    # originatorKey: id-ecPublicKey with absent parameters, the curve is the recipient's.
    originator = der.context(0, der.context(1, algorithm_id(EC_PUBLIC_KEY) + der.bit_string(point)))
    encrypted_key = der.sequence(
        [der.context(0, der.octet_string(ski)), der.octet_string(aes_key_wrap(kek, cek))]
    )
    return der.context(
        1,
        der.integer(3)
        + originator
        + algorithm_id(_ECDH_SHA256_KDF, wrap_alg)
        + der.sequence([encrypted_key]),
    )


def _kek_recipient(shared: SharedKey, cek: bytes) -> bytes:
    """kekri [2] IMPLICIT KEKRecipientInfo v4 (RFC 5652 s6.2.3): kekid holds only the
    keyIdentifier; the AES key wrap takes no parameters (RFC 3565 s2.3.2)."""
    return der.context(
        2,
        der.integer(4)
        + der.sequence([der.octet_string(shared.key_id)])
        + algorithm_id(WRAP_FOR_KEK_BYTES[len(shared.key)])
        + der.octet_string(aes_key_wrap(shared.key, cek)),
    )
