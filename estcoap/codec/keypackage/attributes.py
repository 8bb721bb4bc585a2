"""The CSR attributes a client uses to ask for an encrypted key (RFC 7030 s4.4.1), and the
server's reading of them: which key to encrypt to, and which content ciphers it accepts."""

from __future__ import annotations

from collections.abc import Sequence

from .. import der, oids
from .cms import WRAP_FOR_CONTENT, KeyPackageError, fields_of


def asymmetric_decrypt_key_id_attribute(key_id: bytes) -> bytes:
    """DER of the PKCS#10 Attribute AsymmetricDecryptKeyIdentifier (RFC 7030 s4.4.1.2):
    the subjectKeyIdentifier of the key the server is to encrypt the new key for."""
    return der.sequence(
        [der.oid(oids.ID_AA_ASYMM_DECRYPT_KEY_ID), der.set_of([der.octet_string(key_id)])]
    )


def decrypt_key_id_attribute(key_id: bytes) -> bytes:
    """DER of the PKCS#10 Attribute DecryptKeyIdentifier (RFC 7030 s4.4.1.1, RFC 4108):
    the identifier of the symmetric key, shared in advance, to encrypt the new key with."""
    return der.sequence(
        [der.oid(oids.ID_AA_DECRYPT_KEY_ID), der.set_of([der.octet_string(key_id)])]
    )


def smime_capabilities_attribute(ciphers: Sequence[str] = (oids.AES128_CBC,)) -> bytes:
    """A PKCS#10 Attribute listing the content ciphers the client accepts, best first."""
    try:
        capabilities = der.sequence([der.sequence([der.oid(cipher)]) for cipher in ciphers])
    except der.DerError as exc:
        raise KeyPackageError(f"bad capability: {exc}") from exc
    return der.sequence([der.oid(oids.ID_SMIME_CAPABILITIES), der.set_of([capabilities])])


def smime_capabilities(attribute_values: bytes) -> list[str]:
    """The capability OIDs, in order, from an smimeCapabilities Attribute's values SET."""
    try:
        values = der.read_one(attribute_values)
        if not der.is_set(values):
            raise KeyPackageError("smimeCapabilities: values must be a SET")
        found = []
        for value in values.children():
            for capability in fields_of(value, "SMIMECapabilities", 0):
                found.append(der.decode_oid(fields_of(capability, "SMIMECapability", 1)[0]))
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
        return oids.AES128_CBC
    return next((cipher for cipher in capabilities if cipher in WRAP_FOR_CONTENT), None)
