"""Encrypted server-generated keys (RFC 7030 s4.4.1.2 and s4.4.2).

The server signs an AsymmetricKeyPackage (RFC 5958) holding the new PKCS#8 key in a CMS
SignedData (RFC 5652, eContentType id-ct-KP-aKeyPackage), then encrypts that SignedData
to the client in a CMS EnvelopedData: key transport with RSAES-OAEP for RSA recipients
(RFC 4055), ephemeral-static ECDH with the X9.63 KDF and AES key wrap for EC recipients
(RFC 5753), or, when client and server share a symmetric key in advance (RFC 7030
s4.4.1.1, DecryptKeyIdentifier), a KEKRecipientInfo wrapping the content key with that
key (RFC 5652 s6.2.3, AES key wrap per RFC 3565). The ASN.1 is written and read with
the small DER module; every primitive comes from `cryptography`.

By job: recipients (who a package is for), sealing (server), opening and verifying
(client), attributes (the CSR attributes that ask for all this), cms (what they share).
"""

from ..oids import (
    AES128_CBC,
    AES192_CBC,
    AES256_CBC,
    ID_AA_ASYMM_DECRYPT_KEY_ID,
    ID_AA_DECRYPT_KEY_ID,
    ID_CT_KP_AKEY_PACKAGE,
    ID_DATA,
    ID_ENVELOPED_DATA,
    ID_SIGNED_DATA,
    ID_SMIME_CAPABILITIES,
)
from .attributes import (
    asymmetric_decrypt_key_id_attribute,
    choose_content_cipher,
    decrypt_key_id_attribute,
    key_identifier,
    smime_capabilities,
    smime_capabilities_attribute,
)
from .cms import KeyPackageError
from .opening import open_key
from .recipients import MIN_RSA_RECIPIENT_BITS, Recipient, SharedKey, subject_key_identifier
from .sealing import seal_key
from .verifying import OpenedKey

__all__ = [
    "AES128_CBC",
    "AES192_CBC",
    "AES256_CBC",
    "ID_AA_ASYMM_DECRYPT_KEY_ID",
    "ID_AA_DECRYPT_KEY_ID",
    "ID_CT_KP_AKEY_PACKAGE",
    "ID_DATA",
    "ID_ENVELOPED_DATA",
    "ID_SIGNED_DATA",
    "ID_SMIME_CAPABILITIES",
    "MIN_RSA_RECIPIENT_BITS",
    "KeyPackageError",
    "OpenedKey",
    "Recipient",
    "SharedKey",
    "asymmetric_decrypt_key_id_attribute",
    "choose_content_cipher",
    "decrypt_key_id_attribute",
    "key_identifier",
    "open_key",
    "seal_key",
    "smime_capabilities",
    "smime_capabilities_attribute",
    "subject_key_identifier",
]
