"""A CsrAttrs body as a whole: decode and encode it, hold it to the RFC 9908 rules, and
build one from what a server wants."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from .. import der
from ..errors import CsrAttrsError
from .extensions import check_extensions_shape, encode_extensions
from .items import (
    OID_CERT_REQ_INFO_TEMPLATE,
    OID_CHALLENGE_PASSWORD,
    OID_EXTENSION_REQUEST,
    CsrAttribute,
    CsrAttrItem,
    CsrAttrOid,
    decode_item,
)
from .keys import KeyRequest, key_item, signature_oid
from .templates import CsrTemplate, decode_template, encode_template


def decode_csrattrs(data: bytes) -> tuple[CsrAttrItem, ...]:
    """Parse a CsrAttrs DER body. Raises CsrAttrsError with a short diagnostic."""
    try:
        top = der.read_one(data)
    except der.DerError as exc:
        raise CsrAttrsError(f"csrattrs is not DER: {exc}") from exc
    if not der.is_sequence(top):
        raise CsrAttrsError("csrattrs must be a SEQUENCE")
    try:
        elements = top.children()
    except der.DerError as exc:
        raise CsrAttrsError(f"csrattrs is not DER: {exc}") from exc
    items: list[CsrAttrItem] = []
    for index, element in enumerate(elements):
        try:
            items.append(decode_item(element))
        except der.DerError as exc:
            raise CsrAttrsError(f"csrattrs element {index}: {exc}") from exc
    _check_rfc9908(items)
    return tuple(items)


def encode_csrattrs(items: Iterable[CsrAttrItem]) -> bytes:
    """DER of a CsrAttrs SEQUENCE; attribute values are emitted in DER SET order."""
    parts = []
    for item in items:
        if isinstance(item, CsrAttrOid):
            parts.append(der.oid(item.oid.dotted_string))
        elif isinstance(item, CsrAttribute):
            parts.append(der.sequence([der.oid(item.oid.dotted_string), der.set_of(item.values)]))
        else:
            raise TypeError(f"not a csrattrs item: {item!r}")
    return der.sequence(parts)


def _check_rfc9908(items: Sequence[CsrAttrItem]) -> None:
    attributes = [i for i in items if isinstance(i, CsrAttribute)]
    ext_requests = [a for a in attributes if a.oid == OID_EXTENSION_REQUEST]
    if len(ext_requests) > 1:
        raise CsrAttrsError("csrattrs has more than one extensionRequest attribute (RFC 9908)")
    for attribute in ext_requests:
        _check_extension_request(attribute)
    templates = [a for a in attributes if a.oid == OID_CERT_REQ_INFO_TEMPLATE]
    if len(templates) > 1:
        raise CsrAttrsError("csrattrs has more than one CSR template attribute (RFC 9908)")
    for attribute in templates:
        if len(attribute.values) != 1:
            raise CsrAttrsError("a CSR template attribute holds exactly one value")
        decode_template(attribute.values[0])


def _check_extension_request(attribute: CsrAttribute) -> None:
    try:
        values = [der.read_one(v) for v in attribute.values]
    except der.DerError as exc:
        raise CsrAttrsError(f"extensionRequest value is not DER: {exc}") from exc
    if values and all(v.is_universal(der.OBJECT_IDENTIFIER) for v in values):
        return  # the RFC 7030 s4.5.2 example form: tolerated, see csrattrs_warnings()
    if len(values) != 1 or not der.is_sequence(values[0]):
        raise CsrAttrsError("extensionRequest must hold exactly one Extensions SEQUENCE (RFC 9908)")
    try:
        check_extensions_shape(values[0])
    except der.DerError as exc:
        raise CsrAttrsError(f"extensionRequest value is not Extensions: {exc}") from exc


def build_csrattrs(
    *,
    challenge_password: bool,
    key: KeyRequest | None = None,
    signature_hash: hashes.HashAlgorithm | None = None,
    extensions: x509.Extensions | None = None,
    template: CsrTemplate | None = None,
    extra: Iterable[CsrAttrItem] = (),
) -> bytes:
    """A CsrAttrs body in the RFC 9908 form from what the server wants."""
    items: list[CsrAttrItem] = []
    if challenge_password:
        items.append(CsrAttrOid(OID_CHALLENGE_PASSWORD))
    if key is not None:
        items.append(key_item(key))
    if extensions is not None and len(extensions):
        items.append(CsrAttribute(OID_EXTENSION_REQUEST, (encode_extensions(extensions),)))
    if signature_hash is not None:
        items.append(CsrAttrOid(signature_oid(signature_hash, key)))
    if template is not None:
        items.append(CsrAttribute(OID_CERT_REQ_INFO_TEMPLATE, (encode_template(template),)))
    items.extend(extra)
    _check_rfc9908(items)
    return encode_csrattrs(items)
