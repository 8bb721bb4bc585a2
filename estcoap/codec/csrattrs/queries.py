"""What the server asked for, read from decoded csrattrs items: a challengePassword, a
key, a signature hash, extensions, a template; and what is not in the RFC 9908 form."""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ObjectIdentifier

from .. import der
from ..errors import CsrAttrsError
from .extensions import decode_extensions
from .items import (
    OID_CERT_REQ_INFO_TEMPLATE,
    OID_CHALLENGE_PASSWORD,
    OID_EC_PUBLIC_KEY,
    OID_EXTENSION_REQUEST,
    OID_RSA_ENCRYPTION,
    CsrAttribute,
    CsrAttrItem,
    CsrAttrOid,
    read_oid,
    reported,
)
from .keys import EDWARDS, HASH_BY_OID, KeyRequest, is_curve
from .templates import CsrTemplate, decode_template


def _oids(items: Iterable[CsrAttrItem]) -> list[ObjectIdentifier]:
    return [item.oid for item in items if isinstance(item, CsrAttrOid)]


def _attribute(items: Iterable[CsrAttrItem], oid: ObjectIdentifier) -> CsrAttribute | None:
    for item in items:
        if isinstance(item, CsrAttribute) and item.oid == oid:
            return item
    return None


def wants_challenge_password(items: Iterable[CsrAttrItem]) -> bool:
    """True when challengePassword is asked for, as a bare OID or as an attribute."""
    return any(item.oid == OID_CHALLENGE_PASSWORD for item in items)


@reported
def requested_template(items: Iterable[CsrAttrItem]) -> CsrTemplate | None:
    attribute = _attribute(items, OID_CERT_REQ_INFO_TEMPLATE)
    return decode_template(attribute.values[0]) if attribute else None


@reported
def requested_key(items: Iterable[CsrAttrItem]) -> KeyRequest | None:
    """The key type asked for: the template's first, then a key-type attribute, then bare OIDs."""
    items = tuple(items)
    template = requested_template(items)
    if template is not None and template.key is not None:
        return template.key
    ec_attr = _attribute(items, OID_EC_PUBLIC_KEY)
    if ec_attr is not None:
        curve = _single_value(ec_attr, der.OBJECT_IDENTIFIER)
        return KeyRequest.ec(read_oid(curve) if curve else None)
    rsa_attr = _attribute(items, OID_RSA_ENCRYPTION)
    if rsa_attr is not None:
        size = _single_value(rsa_attr, der.INTEGER)
        bits = der.decode_integer(size) if size else None
        if bits is not None and not 512 <= bits <= 65536:
            raise CsrAttrsError(f"rsaEncryption key size {bits} is out of range")
        return KeyRequest.rsa(bits)
    oids = _oids(items)
    curve_oid = next((oid for oid in oids if is_curve(oid)), None)
    if OID_EC_PUBLIC_KEY in oids or curve_oid is not None:
        return KeyRequest.ec(curve_oid)
    bare_algorithms = (OID_RSA_ENCRYPTION, *EDWARDS)
    for algorithm in bare_algorithms:
        if algorithm in oids:
            return KeyRequest(algorithm)
    return None


def requested_signature_hash(items: Iterable[CsrAttrItem]) -> hashes.HashAlgorithm | None:
    """The hash named by a bare signature or hash algorithm OID (e.g. ecdsa-with-SHA384)."""
    for oid in _oids(items):
        algorithm = HASH_BY_OID.get(oid.dotted_string)
        if algorithm is not None:
            return algorithm()
    return None


def requested_extensions(items: Iterable[CsrAttrItem]) -> x509.Extensions | None:
    """Extensions from the extensionRequest attribute (or the template's), else None.

    The RFC 7030 s4.5.2 form with bare OIDs is not Extensions and gives None;
    see legacy_extension_oids().
    """
    items = tuple(items)
    attribute = _attribute(items, OID_EXTENSION_REQUEST)
    if attribute is None:
        template = requested_template(items)
        if template is not None:
            attribute = _attribute(template.attributes, OID_EXTENSION_REQUEST)
    if attribute is None or _is_legacy_extension_request(attribute):
        return None
    return decode_extensions(attribute.values[0])


@reported
def legacy_extension_oids(items: Iterable[CsrAttrItem]) -> tuple[ObjectIdentifier, ...]:
    """OIDs listed bare inside extensionRequest (the RFC 7030 s4.5.2 example form)."""
    attribute = _attribute(items, OID_EXTENSION_REQUEST)
    if attribute is None or not _is_legacy_extension_request(attribute):
        return ()
    return tuple(read_oid(der.read_one(v)) for v in attribute.values)


@reported
def csrattrs_warnings(items: Iterable[CsrAttrItem]) -> tuple[str, ...]:
    """Things that decode but are not the RFC 9908 form."""
    warnings = []
    if legacy_extension_oids(items):
        warnings.append(
            "extensionRequest holds bare OIDs (RFC 7030 s4.5.2 example form), not Extensions;"
            " RFC 9908 says this encoding is not correct"
        )
    return tuple(warnings)


def _is_legacy_extension_request(attribute: CsrAttribute) -> bool:
    oid_tag = bytes([der.OBJECT_IDENTIFIER])
    return bool(attribute.values) and all(v[:1] == oid_tag for v in attribute.values)


def _single_value(attribute: CsrAttribute, number: int) -> der.Tlv | None:
    if not attribute.values:
        return None
    if len(attribute.values) > 1:
        raise CsrAttrsError(f"attribute {attribute.oid.dotted_string} must hold at most one value")
    try:
        value = der.read_one(attribute.values[0])
    except der.DerError as exc:
        raise CsrAttrsError(f"attribute {attribute.oid.dotted_string}: {exc}") from exc
    if not value.is_universal(number):
        raise CsrAttrsError(f"attribute {attribute.oid.dotted_string}: value of the wrong type")
    return value
