"""How a server-generated key goes back to the client (RFC 7030 s4.4.1, s4.4.2).

Plain PKCS#8 when the client asks nothing more: the (D)TLS channel protects it. When the
CSR carries AsymmetricDecryptKeyIdentifier (s4.4.1.2), the key is signed by this CA (the
party that generated it) and enveloped for the key that identifier names: the client
certificate of the channel, or the CSR's own key. The CSR's key is the one that works
through a registrar or proxy, which passes the CSR on but not the device's channel.
DecryptKeyIdentifier (s4.4.1.1) names a symmetric key shared in advance (`serve
--shared-keys`); the package is then enveloped with that key as the key-encryption key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ..codec import keypackage
from ..codec.errors import CodecError
from ..codec.pkcs10 import Csr
from ..service import BadRequest, KeyFormat, NotSupported, Peer


@dataclass(frozen=True)
class KeyDelivery:
    """recipient None: plain PKCS#8. Otherwise seal for that key with that cipher."""

    recipient: keypackage.Recipient | keypackage.SharedKey | None = None
    cipher: str = keypackage.AES128_CBC

    def deliver(
        self, pkcs8: bytes, signer_certificate: x509.Certificate, signer_key: PrivateKeyTypes
    ) -> tuple[bytes, KeyFormat]:
        """(key bytes, format) for the answer."""
        if self.recipient is None:
            return pkcs8, KeyFormat.PKCS8
        sealed = keypackage.seal_key(
            pkcs8,
            signer_certificate=signer_certificate,
            signer_key=signer_key,
            recipient=self.recipient,
            content_cipher=self.cipher,
        )
        return sealed, KeyFormat.CMS_ENVELOPED


PLAIN = KeyDelivery()


def key_delivery_for(
    csr: Csr, peer: Peer, shared_keys: Mapping[bytes, bytes] | None = None
) -> KeyDelivery:
    """Read what the CSR asks for; refuse, before anything is issued, what cannot be done."""
    attributes = csr.attributes
    symmetric = attributes.get(keypackage.ID_AA_DECRYPT_KEY_ID)
    asymmetric = attributes.get(keypackage.ID_AA_ASYMM_DECRYPT_KEY_ID)
    if symmetric is not None and asymmetric is not None:
        raise BadRequest(
            "ask for one of DecryptKeyIdentifier and AsymmetricDecryptKeyIdentifier, not both"
        )
    recipient: keypackage.Recipient | keypackage.SharedKey
    try:
        if symmetric is not None:
            key_id = keypackage.key_identifier(symmetric, "DecryptKeyIdentifier")
            recipient = _shared_key_named(key_id, shared_keys)
        elif asymmetric is not None:
            key_id = keypackage.key_identifier(asymmetric, "AsymmetricDecryptKeyIdentifier")
            recipient = _recipient_named(key_id, csr, peer)
        else:
            return PLAIN
    except CodecError as exc:
        raise BadRequest(str(exc)) from exc
    cipher = keypackage.AES128_CBC
    capabilities = attributes.get(keypackage.ID_SMIME_CAPABILITIES)
    if capabilities is not None:
        try:
            chosen = keypackage.choose_content_cipher(keypackage.smime_capabilities(capabilities))
        except CodecError as exc:
            raise BadRequest(f"SMIMECapabilities attribute is malformed: {exc}") from exc
        if chosen is None:
            raise BadRequest(
                "none of the SMIMECapabilities content ciphers is supported here"
                " (AES-128-CBC, AES-256-CBC)"
            )
        cipher = chosen
    return KeyDelivery(recipient, cipher)


def _shared_key_named(
    key_id: bytes, shared_keys: Mapping[bytes, bytes] | None
) -> keypackage.SharedKey:
    if not shared_keys:
        raise NotSupported(
            "DecryptKeyIdentifier (RFC 7030 s4.4.1.1) needs a symmetric key shared in advance,"
            " and this CA has none; ask with AsymmetricDecryptKeyIdentifier instead"
        )
    key = shared_keys.get(key_id)
    if key is None:
        raise BadRequest(f"no shared key known for DecryptKeyIdentifier {key_id.hex()}")
    return keypackage.SharedKey(key_id, key)


def _recipient_named(key_id: bytes, csr: Csr, peer: Peer) -> keypackage.Recipient:
    """The key the identifier names: the channel's client certificate, else the CSR's key."""
    for certificate in peer.certificates[:1]:
        if keypackage.subject_key_identifier(certificate) == key_id:
            try:
                return keypackage.Recipient.of_certificate(certificate)
            except CodecError as exc:
                raise BadRequest(
                    f"the client certificate's key cannot receive an encrypted key: {exc}"
                ) from exc
    try:
        csr_key = keypackage.Recipient.of_public_key(csr.public_key)
    except CodecError as exc:
        raise BadRequest(f"the CSR's key cannot receive an encrypted key: {exc}") from exc
    if csr_key.key_id == key_id:
        return csr_key
    raise BadRequest(
        f"no key known for AsymmetricDecryptKeyIdentifier {key_id.hex()}: it must be the"
        " subjectKeyIdentifier of the client certificate or of the CSR's public key"
    )
