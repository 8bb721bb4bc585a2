"""Every object identifier the project names, grouped by the standard that defines it.

Two forms, each where it is used:

* dotted strings (`str`) for the CMS code (keypackage, pkcs7), which reads and writes
  OIDs through der.oid() / der.decode_oid() and compares them as text;
* cryptography's ObjectIdentifier for the X.509 / PKCS#10 code (csrattrs, trust, ca),
  taken from cryptography's own tables (NameOID, SignatureAlgorithmOID, ...) wherever
  it has the OID, and declared here only when it does not.

Hot paths that compare encoded bytes get the DER encoding next to the dotted form
(`*_DER`), computed once at import. tests/unit/test_codec_oids.py checks that no dotted
OID literal is written anywhere else in the package.
"""

from __future__ import annotations

from cryptography.x509.oid import (
    AttributeOID,
    ObjectIdentifier,
    PublicKeyAlgorithmOID,
    SignatureAlgorithmOID,
)

from . import der

# -- RFC 5652 CMS: content types and signed attributes (PKCS#7, PKCS#9) --------------

ID_DATA = "1.2.840.113549.1.7.1"
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
ID_ENVELOPED_DATA = "1.2.840.113549.1.7.3"
ID_CONTENT_TYPE = "1.2.840.113549.1.9.3"  # RFC 5652 s11.1
ID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"  # RFC 5652 s11.2

ID_DATA_DER = der.oid(ID_DATA)
ID_SIGNED_DATA_DER = der.oid(ID_SIGNED_DATA)

# -- RFC 5958 s3: the content type of a signed AsymmetricKeyPackage -------------------

ID_CT_KP_AKEY_PACKAGE = "2.16.840.1.101.2.1.2.78.5"

# -- RFC 7030 s4.4.1 (server-side key generation) attributes of the CSR ---------------

ID_AA_DECRYPT_KEY_ID = "1.2.840.113549.1.9.16.2.37"  # s4.4.1.1, from RFC 4108
ID_AA_ASYMM_DECRYPT_KEY_ID = "1.2.840.113549.1.9.16.2.54"  # s4.4.1.2
ID_SMIME_CAPABILITIES = "1.2.840.113549.1.9.15"  # RFC 8551 s2.5.2

# -- RFC 3565: AES in CMS (content encryption and key wrap) ---------------------------

AES128_CBC = "2.16.840.1.101.3.4.1.2"
AES192_CBC = "2.16.840.1.101.3.4.1.22"
AES256_CBC = "2.16.840.1.101.3.4.1.42"
AES128_WRAP = "2.16.840.1.101.3.4.1.5"
AES192_WRAP = "2.16.840.1.101.3.4.1.25"
AES256_WRAP = "2.16.840.1.101.3.4.1.45"

# -- RFC 5754 / RFC 3370: message digests, by cryptography's hash name ----------------

HASHES: dict[str, str] = {
    "sha1": "1.3.14.3.2.26",
    "sha224": "2.16.840.1.101.3.4.2.4",
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
}

# -- RFC 8017 / RFC 4055: RSA key transport -------------------------------------------

RSA_ENCRYPTION = PublicKeyAlgorithmOID.RSAES_PKCS1_v1_5  # also a PKCS#1 v1.5 signature
RSAES_OAEP = "1.2.840.113549.1.1.7"
MGF1 = "1.2.840.113549.1.1.8"
P_SPECIFIED = "1.2.840.113549.1.1.9"

# -- RFC 5480 / RFC 8410: public key algorithms ---------------------------------------

EC_PUBLIC_KEY = PublicKeyAlgorithmOID.EC_PUBLIC_KEY
ED25519 = PublicKeyAlgorithmOID.ED25519
ED448 = PublicKeyAlgorithmOID.ED448

# -- RFC 5758 / RFC 4055: signatures, by cryptography's hash name ---------------------

ECDSA_WITH: dict[str, ObjectIdentifier] = {
    "sha1": SignatureAlgorithmOID.ECDSA_WITH_SHA1,
    "sha224": SignatureAlgorithmOID.ECDSA_WITH_SHA224,
    "sha256": SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    "sha384": SignatureAlgorithmOID.ECDSA_WITH_SHA384,
    "sha512": SignatureAlgorithmOID.ECDSA_WITH_SHA512,
}
RSA_WITH: dict[str, ObjectIdentifier] = {
    "sha1": SignatureAlgorithmOID.RSA_WITH_SHA1,
    "sha224": SignatureAlgorithmOID.RSA_WITH_SHA224,
    "sha256": SignatureAlgorithmOID.RSA_WITH_SHA256,
    "sha384": SignatureAlgorithmOID.RSA_WITH_SHA384,
    "sha512": SignatureAlgorithmOID.RSA_WITH_SHA512,
}

# -- RFC 5753 s7.1.4 (from SEC 1): ECDH key agreement schemes, by their KDF's hash ----

ECDH_STD_SCHEMES: dict[str, str] = {
    "sha1": "1.3.133.16.840.63.0.2",  # dhSinglePass-stdDH-sha1kdf-scheme
    "sha224": "1.3.132.1.11.0",
    "sha256": "1.3.132.1.11.1",
    "sha384": "1.3.132.1.11.2",
    "sha512": "1.3.132.1.11.3",
}

# -- RFC 2985 (PKCS#9) and RFC 9908: CSR attributes -----------------------------------

CHALLENGE_PASSWORD = AttributeOID.CHALLENGE_PASSWORD
EXTENSION_REQUEST = ObjectIdentifier("1.2.840.113549.1.9.14")  # PKCS#9 id-ExtensionReq
# RFC 9908 s3.4 / IANA "SMI Security for S/MIME Attributes": id-aa 61 and 62.
CERT_REQ_INFO_TEMPLATE = ObjectIdentifier("1.2.840.113549.1.9.16.2.61")
EXTENSION_REQ_TEMPLATE = ObjectIdentifier("1.2.840.113549.1.9.16.2.62")

# -- RFC 6402: extended key usages cryptography does not name -------------------------

KP_CMC_RA = ObjectIdentifier("1.3.6.1.5.5.7.3.28")  # RFC 6402 s2.10: an EST/CMC RA
