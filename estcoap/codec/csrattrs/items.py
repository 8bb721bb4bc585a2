"""The items of a CsrAttrs body (RFC 7030 s4.5.2): a bare OID or an Attribute, read from
DER without interpreting the values; and the OIDs that have a meaning in csrattrs."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from cryptography.x509.oid import ObjectIdentifier

from .. import der, oids
from ..errors import CsrAttrsError

OID_CHALLENGE_PASSWORD = oids.CHALLENGE_PASSWORD
OID_EXTENSION_REQUEST = oids.EXTENSION_REQUEST
OID_EC_PUBLIC_KEY = oids.EC_PUBLIC_KEY
OID_RSA_ENCRYPTION = oids.RSA_ENCRYPTION
OID_CERT_REQ_INFO_TEMPLATE = oids.CERT_REQ_INFO_TEMPLATE
OID_EXTENSION_REQ_TEMPLATE = oids.EXTENSION_REQ_TEMPLATE

P = ParamSpec("P")


R = TypeVar("R")


def read_oid(item: der.Tlv) -> ObjectIdentifier:
    """An OBJECT IDENTIFIER TLV as cryptography's type; anything it refuses is a DerError."""
    dotted = der.decode_oid(item)
    try:
        return ObjectIdentifier(dotted)
    except ValueError as exc:
        raise der.DerError(f"unusable OBJECT IDENTIFIER {dotted}") from exc


def reported(function: Callable[P, R]) -> Callable[P, R]:
    """Public helpers read values decode did not interpret: report those as CsrAttrsError."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except der.DerError as exc:
            raise CsrAttrsError(f"csrattrs: {exc}") from exc

    return wrapper


@dataclass(frozen=True)
class CsrAttrOid:
    """A bare OID: include this attribute / use this algorithm (e.g. challengePassword)."""

    oid: ObjectIdentifier


@dataclass(frozen=True)
class CsrAttribute:
    """Attribute { type, values SET OF AttributeValue }; each value is its complete DER TLV."""

    oid: ObjectIdentifier
    values: tuple[bytes, ...]


CsrAttrItem = CsrAttrOid | CsrAttribute


def decode_item(element: der.Tlv) -> CsrAttrItem:
    if element.is_universal(der.OBJECT_IDENTIFIER):
        return CsrAttrOid(read_oid(element))
    if not der.is_sequence(element):
        raise der.DerError("not an OBJECT IDENTIFIER or an Attribute SEQUENCE")
    fields = element.children()
    if len(fields) != 2 or not der.is_set(fields[1]):
        raise der.DerError("an Attribute is SEQUENCE { OBJECT IDENTIFIER, SET }")
    oid = read_oid(fields[0])
    values = tuple(value.raw for value in fields[1].children())
    return CsrAttribute(oid, values)
