"""CSR attributes (RFC 7030 s4.5.2 as corrected by RFC 8951 s3.5, clarified by RFC 9908).

    CsrAttrs  ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID
    AttrOrOID ::= CHOICE { oid OBJECT IDENTIFIER, attribute Attribute }
    Attribute ::= SEQUENCE { type OBJECT IDENTIFIER, values SET OF ANY }

RFC 9908 rules enforced on decode: at most one extensionRequest attribute, whose
single value is an Extensions SEQUENCE; at most one CertificationRequestInfoTemplate.
The RFC 7030 s4.5.2 example form (bare OIDs inside extensionRequest) still decodes,
but is reported by csrattrs_warnings() and never read as extensions.

Unknown OIDs and attribute types are kept as they are (clients ignore what they
do not understand, RFC 7030 s4.5.2).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurve
from cryptography.x509.oid import NameOID, ObjectIdentifier

from . import der, oids
from .errors import CsrAttrsError

P = ParamSpec("P")
R = TypeVar("R")

# -- OIDs with a meaning here -------------------------------------------------

OID_CHALLENGE_PASSWORD = oids.CHALLENGE_PASSWORD
OID_EXTENSION_REQUEST = oids.EXTENSION_REQUEST
OID_EC_PUBLIC_KEY = oids.EC_PUBLIC_KEY
OID_RSA_ENCRYPTION = oids.RSA_ENCRYPTION
_EDWARDS = (oids.ED25519, oids.ED448)
OID_CERT_REQ_INFO_TEMPLATE = oids.CERT_REQ_INFO_TEMPLATE
OID_EXTENSION_REQ_TEMPLATE = oids.EXTENSION_REQ_TEMPLATE

# The SHA-2 hashes a server may name, bare or as a signature algorithm (not SHA-1).
_SHA2: dict[str, type[hashes.HashAlgorithm]] = {
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_HASH_BY_OID: dict[str, type[hashes.HashAlgorithm]] = {
    **{oids.HASHES[name]: factory for name, factory in _SHA2.items()},
    **{oids.ECDSA_WITH[name].dotted_string: factory for name, factory in _SHA2.items()},
    **{oids.RSA_WITH[name].dotted_string: factory for name, factory in _SHA2.items()},
}
_ECDSA_BY_HASH = {name: oids.ECDSA_WITH[name] for name in _SHA2}
_RSA_BY_HASH = {name: oids.RSA_WITH[name] for name in _SHA2}
_HASH_OID_BY_NAME = {name: oids.HASHES[name] for name in _SHA2}


def _oid(item: der.Tlv) -> ObjectIdentifier:
    """An OBJECT IDENTIFIER TLV as cryptography's type; anything it refuses is a DerError."""
    dotted = der.decode_oid(item)
    try:
        return ObjectIdentifier(dotted)
    except ValueError as exc:
        raise der.DerError(f"unusable OBJECT IDENTIFIER {dotted}") from exc


def _reported(function: Callable[P, R]) -> Callable[P, R]:
    """Public helpers read values decode did not interpret: report those as CsrAttrsError."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except der.DerError as exc:
            raise CsrAttrsError(f"csrattrs: {exc}") from exc

    return wrapper


# -- the items ----------------------------------------------------------------


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


@dataclass(frozen=True)
class KeyRequest:
    """The key a server asks for: an algorithm OID plus an EC curve or an RSA size."""

    algorithm: ObjectIdentifier
    curve: ObjectIdentifier | None = None
    bits: int | None = None

    @classmethod
    def ec(cls, curve: ObjectIdentifier | EllipticCurve | None = None) -> KeyRequest:
        if isinstance(curve, EllipticCurve):
            curve = _curve_oid(curve)
        return cls(OID_EC_PUBLIC_KEY, curve=curve)

    @classmethod
    def rsa(cls, bits: int | None = None) -> KeyRequest:
        return cls(OID_RSA_ENCRYPTION, bits=bits)

    @property
    def kind(self) -> str:
        """"ec", "rsa", "ed25519", "ed448" or "other"."""
        return {
            OID_EC_PUBLIC_KEY: "ec",
            OID_RSA_ENCRYPTION: "rsa",
            oids.ED25519: "ed25519",
            oids.ED448: "ed448",
        }.get(self.algorithm, "other")

    def ec_curve(self) -> EllipticCurve | None:
        """The cryptography curve for the requested curve OID, when it knows it."""
        if self.curve is None:
            return None
        try:
            return ec.get_curve_for_oid(self.curve)()
        except LookupError:
            return None


# -- RFC 9908 CertificationRequestInfoTemplate --------------------------------
#
#   CertificationRequestInfoTemplate ::= SEQUENCE {
#       version       INTEGER { v1(0) },
#       subject       NameTemplate OPTIONAL,
#       subjectPKInfo [0] IMPLICIT SubjectPublicKeyInfoTemplate OPTIONAL,
#       attributes    [1] IMPLICIT Attributes }
#   SingleAttributeTemplate ::= SEQUENCE { type OID, value ANY OPTIONAL }
#   SubjectPublicKeyInfoTemplate ::= SEQUENCE { algorithm AlgorithmIdentifier,
#                                               subjectPublicKey BIT STRING OPTIONAL }
#   ExtensionTemplate ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE,
#                                    extnValue OCTET STRING OPTIONAL }


@dataclass(frozen=True)
class NameTemplateAttribute:
    """One subject attribute; value is its DER TLV, or None when the client fills it in."""

    oid: ObjectIdentifier
    value: bytes | None = None


@dataclass(frozen=True)
class ExtensionTemplate:
    """One extension; value is the extnValue contents, or None when the client supplies it."""

    oid: ObjectIdentifier
    critical: bool = False
    value: bytes | None = None


@dataclass(frozen=True)
class CsrTemplate:
    """A partially filled CertificationRequestInfo the server wants the client to complete."""

    subject: tuple[tuple[NameTemplateAttribute, ...], ...] | None = None  # RDNs
    key_algorithm: bytes | None = None  # AlgorithmIdentifier DER
    key_placeholder: bytes | None = None  # subjectPublicKey BIT STRING TLV (RSA size hint)
    attributes: tuple[CsrAttribute, ...] = field(default=())

    @property
    @_reported
    def key(self) -> KeyRequest | None:
        if self.key_algorithm is None:
            return None
        return _key_from_algorithm(self.key_algorithm, self.key_placeholder)

    @property
    @_reported
    def extension_templates(self) -> tuple[ExtensionTemplate, ...]:
        for attribute in self.attributes:
            if attribute.oid == OID_EXTENSION_REQ_TEMPLATE:
                return _decode_extension_templates(attribute.values[0])
        return ()

    def blank_subject_oids(self) -> tuple[ObjectIdentifier, ...]:
        """Subject attribute types the client must fill in."""
        if not self.subject:
            return ()
        return tuple(a.oid for rdn in self.subject for a in rdn if a.value is None)

    def fill_subject(self, values: Mapping[ObjectIdentifier, str]) -> x509.Name:
        """The subject Name with every blank attribute taken from values."""
        rdns = []
        for rdn in self.subject or ():
            attrs = []
            for item in rdn:
                if item.value is not None:
                    attrs.append(_name_attribute(item.oid, item.value))
                elif item.oid in values:
                    attrs.append(x509.NameAttribute(item.oid, values[item.oid]))
                else:
                    raise CsrAttrsError(f"template leaves subject {item.oid.dotted_string} blank")
            rdns.append(x509.RelativeDistinguishedName(attrs))
        return x509.Name(rdns)

    @classmethod
    def build(
        cls,
        *,
        subject: x509.Name | None = None,
        blank: Sequence[ObjectIdentifier] = (),
        key: KeyRequest | None = None,
        extensions: x509.Extensions | None = None,
        extension_templates: Sequence[ExtensionTemplate] = (),
        attributes: Sequence[CsrAttribute] = (),
    ) -> CsrTemplate:
        """A template from typed parts; blank subject types follow the given subject."""
        rdns: list[tuple[NameTemplateAttribute, ...]] = []
        if subject is not None:
            for rdn in subject.rdns:
                rdns.append(tuple(NameTemplateAttribute(a.oid, _name_value_der(a)) for a in rdn))
        rdns.extend((NameTemplateAttribute(oid),) for oid in blank)
        attrs = list(attributes)
        if extensions is not None and len(extensions) and extension_templates:
            raise CsrAttrsError("a template carries extensions or extension templates, not both")
        if extensions is not None and len(extensions):
            attrs.append(CsrAttribute(OID_EXTENSION_REQUEST, (encode_extensions(extensions),)))
        if extension_templates:
            value = _encode_extension_templates(extension_templates)
            attrs.append(CsrAttribute(OID_EXTENSION_REQ_TEMPLATE, (value,)))
        algorithm, placeholder = _key_to_algorithm(key) if key else (None, None)
        return cls(
            subject=tuple(rdns) if subject is not None or blank else None,
            key_algorithm=algorithm,
            key_placeholder=placeholder,
            attributes=tuple(attrs),
        )


# -- decode / encode ----------------------------------------------------------


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
            items.append(_decode_item(element))
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


def _decode_item(element: der.Tlv) -> CsrAttrItem:
    if element.is_universal(der.OBJECT_IDENTIFIER):
        return CsrAttrOid(_oid(element))
    if not der.is_sequence(element):
        raise der.DerError("not an OBJECT IDENTIFIER or an Attribute SEQUENCE")
    fields = element.children()
    if len(fields) != 2 or not der.is_set(fields[1]):
        raise der.DerError("an Attribute is SEQUENCE { OBJECT IDENTIFIER, SET }")
    oid = _oid(fields[0])
    values = tuple(value.raw for value in fields[1].children())
    return CsrAttribute(oid, values)


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
        _check_extensions_shape(values[0])
    except der.DerError as exc:
        raise CsrAttrsError(f"extensionRequest value is not Extensions: {exc}") from exc


def _check_extensions_shape(extensions: der.Tlv) -> None:
    seen = set()
    for ext in extensions.children():
        if not der.is_sequence(ext):
            raise der.DerError("an Extension is a SEQUENCE")
        fields = ext.children()
        if len(fields) not in (2, 3):
            raise der.DerError("an Extension is SEQUENCE { extnID, critical?, extnValue }")
        oid = der.decode_oid(fields[0])
        if len(fields) == 3:
            der.decode_boolean(fields[1])
        if not fields[-1].is_universal(der.OCTET_STRING) or fields[-1].constructed:
            raise der.DerError("extnValue must be an OCTET STRING")
        if oid in seen:
            raise der.DerError(f"extension {oid} appears twice")
        seen.add(oid)


# -- what the server asked for ------------------------------------------------


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


@_reported
def requested_template(items: Iterable[CsrAttrItem]) -> CsrTemplate | None:
    attribute = _attribute(items, OID_CERT_REQ_INFO_TEMPLATE)
    return decode_template(attribute.values[0]) if attribute else None


@_reported
def requested_key(items: Iterable[CsrAttrItem]) -> KeyRequest | None:
    """The key type asked for: the template's first, then a key-type attribute, then bare OIDs."""
    items = tuple(items)
    template = requested_template(items)
    if template is not None and template.key is not None:
        return template.key
    ec_attr = _attribute(items, OID_EC_PUBLIC_KEY)
    if ec_attr is not None:
        curve = _single_value(ec_attr, der.OBJECT_IDENTIFIER)
        return KeyRequest.ec(_oid(curve) if curve else None)
    rsa_attr = _attribute(items, OID_RSA_ENCRYPTION)
    if rsa_attr is not None:
        size = _single_value(rsa_attr, der.INTEGER)
        bits = der.decode_integer(size) if size else None
        if bits is not None and not 512 <= bits <= 65536:
            raise CsrAttrsError(f"rsaEncryption key size {bits} is out of range")
        return KeyRequest.rsa(bits)
    oids = _oids(items)
    curve_oid = next((oid for oid in oids if _is_curve(oid)), None)
    if OID_EC_PUBLIC_KEY in oids or curve_oid is not None:
        return KeyRequest.ec(curve_oid)
    bare_algorithms = (OID_RSA_ENCRYPTION, *_EDWARDS)
    for algorithm in bare_algorithms:
        if algorithm in oids:
            return KeyRequest(algorithm)
    return None


def requested_signature_hash(items: Iterable[CsrAttrItem]) -> hashes.HashAlgorithm | None:
    """The hash named by a bare signature or hash algorithm OID (e.g. ecdsa-with-SHA384)."""
    for oid in _oids(items):
        algorithm = _HASH_BY_OID.get(oid.dotted_string)
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


@_reported
def legacy_extension_oids(items: Iterable[CsrAttrItem]) -> tuple[ObjectIdentifier, ...]:
    """OIDs listed bare inside extensionRequest (the RFC 7030 s4.5.2 example form)."""
    attribute = _attribute(items, OID_EXTENSION_REQUEST)
    if attribute is None or not _is_legacy_extension_request(attribute):
        return ()
    return tuple(_oid(der.read_one(v)) for v in attribute.values)


@_reported
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


def _is_curve(oid: ObjectIdentifier) -> bool:
    try:
        ec.get_curve_for_oid(oid)
    except LookupError:
        return False
    return True


def _curve_oid(curve: EllipticCurve) -> ObjectIdentifier:
    for oid_name in dir(ec.EllipticCurveOID):
        if oid_name.startswith("_"):
            continue
        oid = getattr(ec.EllipticCurveOID, oid_name)
        try:
            if ec.get_curve_for_oid(oid).name == curve.name:
                return oid
        except LookupError:
            continue
    raise CsrAttrsError(f"no OID known for curve {curve.name}")


# -- building -----------------------------------------------------------------


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
        items.append(_key_item(key))
    if extensions is not None and len(extensions):
        items.append(CsrAttribute(OID_EXTENSION_REQUEST, (encode_extensions(extensions),)))
    if signature_hash is not None:
        items.append(CsrAttrOid(_signature_oid(signature_hash, key)))
    if template is not None:
        items.append(CsrAttribute(OID_CERT_REQ_INFO_TEMPLATE, (encode_template(template),)))
    items.extend(extra)
    _check_rfc9908(items)
    return encode_csrattrs(items)


def _key_item(key: KeyRequest) -> CsrAttrItem:
    if key.algorithm == OID_EC_PUBLIC_KEY and key.curve is not None:
        return CsrAttribute(OID_EC_PUBLIC_KEY, (der.oid(key.curve.dotted_string),))
    if key.algorithm == OID_RSA_ENCRYPTION and key.bits is not None:
        return CsrAttribute(OID_RSA_ENCRYPTION, (der.integer(key.bits),))
    return CsrAttrOid(key.algorithm)


def _signature_oid(algorithm: hashes.HashAlgorithm, key: KeyRequest | None) -> ObjectIdentifier:
    table = {"ec": _ECDSA_BY_HASH, "rsa": _RSA_BY_HASH}.get(key.kind if key else "", None)
    if table is not None and algorithm.name in table:
        return table[algorithm.name]
    if algorithm.name in _HASH_OID_BY_NAME:
        return ObjectIdentifier(_HASH_OID_BY_NAME[algorithm.name])
    raise CsrAttrsError(f"no OID for signature hash {algorithm.name}")


# -- Extensions <-> DER ---------------------------------------------------------


def encode_extensions(extensions: x509.Extensions | Iterable[x509.Extension]) -> bytes:
    """DER of an Extensions SEQUENCE (the value of an extensionRequest attribute)."""
    parts = []
    for ext in extensions:
        fields = [der.oid(ext.oid.dotted_string)]
        if ext.critical:
            fields.append(der.boolean(True))
        fields.append(der.octet_string(ext.value.public_bytes()))
        parts.append(der.sequence(fields))
    return der.sequence(parts)


# A fixed P-256 public key: decode_extensions() wraps Extensions in an unsigned
# request shell so that cryptography parses the extension values for us.
_SHELL_SPKI = bytes.fromhex(
    "3059301306072a8648ce3d020106082a8648ce3d03010703420004"
    "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
    "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"
)


def decode_extensions(data: bytes) -> x509.Extensions:
    """x509.Extensions from the DER of an Extensions SEQUENCE."""
    try:
        _check_extensions_shape(der.read_one(data))
    except der.DerError as exc:
        raise CsrAttrsError(f"not an Extensions SEQUENCE: {exc}") from exc
    attribute = der.sequence([der.oid(OID_EXTENSION_REQUEST.dotted_string), der.set_of([data])])
    info = der.sequence([der.integer(0), der.sequence([]), _SHELL_SPKI, der.context(0, attribute)])
    algorithm = der.sequence([der.oid(oids.ECDSA_WITH["sha256"].dotted_string)])
    shell = der.sequence([info, algorithm, der.bit_string(b"\x00")])
    try:
        return x509.load_der_x509_csr(shell).extensions
    except (ValueError, x509.DuplicateExtension) as exc:
        raise CsrAttrsError(f"extension values do not parse: {exc}") from exc


# -- template codec -----------------------------------------------------------


def decode_template(data: bytes) -> CsrTemplate:
    """Parse a CertificationRequestInfoTemplate (the value of the RFC 9908 template attribute)."""
    try:
        return _decode_template(der.read_one(data))
    except der.DerError as exc:
        raise CsrAttrsError(f"CertificationRequestInfoTemplate: {exc}") from exc


def _decode_template(top: der.Tlv) -> CsrTemplate:
    if not der.is_sequence(top):
        raise der.DerError("must be a SEQUENCE")
    fields = top.children()
    if not fields or der.decode_integer(fields[0]) != 0:
        raise der.DerError("version must be v1(0)")
    rest = fields[1:]
    subject = None
    if rest and der.is_sequence(rest[0]):
        subject = _decode_name_template(rest.pop(0))
    key_algorithm = key_placeholder = None
    if rest and rest[0].is_context(0) and rest[0].constructed:
        spki = rest.pop(0).children()
        if not 1 <= len(spki) <= 2 or not der.is_sequence(spki[0]):
            raise der.DerError("subjectPKInfo is [0] { AlgorithmIdentifier, BIT STRING OPTIONAL }")
        algorithm = spki[0].children()
        if not algorithm:
            raise der.DerError("AlgorithmIdentifier is empty")
        _oid(algorithm[0])
        key_algorithm = spki[0].raw
        if len(spki) == 2:
            if not spki[1].is_universal(der.BIT_STRING):
                raise der.DerError("subjectPublicKey must be a BIT STRING")
            key_placeholder = spki[1].raw
    attributes: tuple[CsrAttribute, ...] = ()
    if rest and rest[0].is_context(1) and rest[0].constructed:
        attributes = tuple(_decode_item(a) for a in rest.pop(0).children())  # type: ignore[misc]
        if not all(isinstance(a, CsrAttribute) for a in attributes):
            raise der.DerError("template attributes must be Attribute SEQUENCEs")
    if rest:
        raise der.DerError(f"unexpected element with tag {rest[0].raw[:1].hex()}")
    _check_template_attributes(attributes)
    return CsrTemplate(subject, key_algorithm, key_placeholder, attributes)


def _check_template_attributes(attributes: Sequence[CsrAttribute]) -> None:
    oids = [a.oid for a in attributes]
    if oids.count(OID_EXTENSION_REQUEST) > 1 or oids.count(OID_EXTENSION_REQ_TEMPLATE) > 1:
        raise der.DerError("at most one extensionRequest / extensionReqTemplate attribute")
    if OID_EXTENSION_REQUEST in oids and OID_EXTENSION_REQ_TEMPLATE in oids:
        raise der.DerError("extensionRequest and extensionReqTemplate must not both appear")
    for attribute in attributes:
        if attribute.oid == OID_EXTENSION_REQUEST:
            if len(attribute.values) != 1:
                raise der.DerError("extensionRequest must hold exactly one Extensions")
            _check_extensions_shape(der.read_one(attribute.values[0]))
        if attribute.oid == OID_EXTENSION_REQ_TEMPLATE:
            if len(attribute.values) != 1:
                raise der.DerError("extensionReqTemplate must hold exactly one value")
            _decode_extension_templates(attribute.values[0])


def _decode_name_template(name: der.Tlv) -> tuple[tuple[NameTemplateAttribute, ...], ...]:
    rdns = []
    for rdn in name.children():
        if not der.is_set(rdn) or not rdn.content:
            raise der.DerError("a RelativeDistinguishedNameTemplate is a non-empty SET")
        attrs = []
        for single in rdn.children():
            parts = single.children() if der.is_sequence(single) else []
            if not 1 <= len(parts) <= 2:
                raise der.DerError("a SingleAttributeTemplate is SEQUENCE { type, value OPTIONAL }")
            oid = _oid(parts[0])
            attrs.append(NameTemplateAttribute(oid, parts[1].raw if len(parts) == 2 else None))
        rdns.append(tuple(attrs))
    return tuple(rdns)


def _decode_extension_templates(data: bytes) -> tuple[ExtensionTemplate, ...]:
    top = der.read_one(data)
    if not der.is_sequence(top) or not top.content:
        raise der.DerError("ExtensionReqTemplate is a non-empty SEQUENCE OF ExtensionTemplate")
    result = []
    for ext in top.children():
        parts = ext.children() if der.is_sequence(ext) else []
        if not 1 <= len(parts) <= 3:
            raise der.DerError("ExtensionTemplate is SEQUENCE { extnID, critical?, extnValue? }")
        oid = _oid(parts[0])
        critical, value, index = False, None, 1
        if index < len(parts) and parts[index].is_universal(der.BOOLEAN):
            critical = der.decode_boolean(parts[index])
            index += 1
        if index < len(parts):
            if not parts[index].is_universal(der.OCTET_STRING):
                raise der.DerError("extnValue must be an OCTET STRING")
            value = parts[index].content
            index += 1
        if index != len(parts):
            raise der.DerError("ExtensionTemplate has trailing elements")
        result.append(ExtensionTemplate(oid, critical, value))
    return tuple(result)


def _encode_extension_templates(templates: Sequence[ExtensionTemplate]) -> bytes:
    parts = []
    for t in templates:
        fields = [der.oid(t.oid.dotted_string)]
        if t.critical:
            fields.append(der.boolean(True))
        if t.value is not None:
            fields.append(der.octet_string(t.value))
        parts.append(der.sequence(fields))
    return der.sequence(parts)


def encode_template(template: CsrTemplate) -> bytes:
    """DER of a CertificationRequestInfoTemplate."""
    fields = [der.integer(0)]
    if template.subject is not None:
        rdns = []
        for rdn in template.subject:
            singles = []
            for a in rdn:
                parts = [der.oid(a.oid.dotted_string)]
                if a.value is not None:
                    parts.append(a.value)
                singles.append(der.sequence(parts))
            rdns.append(der.set_of(singles))
        fields.append(der.sequence(rdns))
    if template.key_algorithm is not None:
        spki = template.key_algorithm + (template.key_placeholder or b"")
        fields.append(der.context(0, spki))
    attributes = [
        der.sequence([der.oid(a.oid.dotted_string), der.set_of(a.values)])
        for a in template.attributes
    ]
    fields.append(der.context(1, b"".join(sorted(attributes))))
    return der.sequence(fields)


def template_attribute(template: CsrTemplate) -> CsrAttribute:
    """The csrattrs item carrying a template."""
    return CsrAttribute(OID_CERT_REQ_INFO_TEMPLATE, (encode_template(template),))


def _key_from_algorithm(algorithm: bytes, placeholder: bytes | None) -> KeyRequest:
    fields = der.read_one(algorithm).children()
    oid = _oid(fields[0])
    if oid == OID_EC_PUBLIC_KEY:
        params = fields[1] if len(fields) > 1 else None
        if params is not None and params.is_universal(der.OBJECT_IDENTIFIER):
            return KeyRequest.ec(_oid(params))
        return KeyRequest.ec()
    if oid == OID_RSA_ENCRYPTION:
        return KeyRequest.rsa(_rsa_placeholder_bits(placeholder))
    return KeyRequest(oid)


def _rsa_placeholder_bits(placeholder: bytes | None) -> int | None:
    """Modulus size of the dummy RSAPublicKey an RFC 9908 template uses as a size hint."""
    if placeholder is None:
        return None
    try:
        bits = der.read_one(placeholder).content[1:]
        modulus = der.read_one(bits).children()[0]
    except (der.DerError, IndexError):
        return None
    if not modulus.is_universal(der.INTEGER):
        return None
    raw = modulus.content
    if len(raw) > 1 and raw[0] == 0:
        raw = raw[1:]
    if not raw:
        return None
    # A placeholder may be all zeros; its length still states the size.
    if raw[0] & 0x80 or not any(raw):
        return len(raw) * 8
    return int.from_bytes(raw, "big").bit_length()


def _key_to_algorithm(key: KeyRequest) -> tuple[bytes, bytes | None]:
    if key.algorithm == OID_EC_PUBLIC_KEY:
        params = [der.oid(key.curve.dotted_string)] if key.curve else []
        return der.sequence([der.oid(OID_EC_PUBLIC_KEY.dotted_string), *params]), None
    if key.algorithm == OID_RSA_ENCRYPTION:
        rsa_oid = der.oid(OID_RSA_ENCRYPTION.dotted_string)
        algorithm = der.sequence([rsa_oid, der.tlv(der.NULL, b"")])
        if key.bits is None:
            return algorithm, None
        modulus = 1 << (key.bits - 1)  # only its length matters
        dummy = der.sequence([der.integer(modulus), der.integer(65537)])
        return algorithm, der.bit_string(dummy)
    return der.sequence([der.oid(key.algorithm.dotted_string)]), None


# -- subject helpers ------------------------------------------------------------

# DirectoryString and friends: tag -> how the octets spell the text.
_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x16: "ascii",  # IA5String
    0x14: "latin-1",  # T61String (close enough for the printable range)
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}


def _name_attribute(oid: ObjectIdentifier, value: bytes) -> x509.NameAttribute:
    try:
        tlv = der.read_one(value)
    except der.DerError as exc:
        raise CsrAttrsError(f"subject {oid.dotted_string} value: {exc}") from exc
    codec = _STRING_CODECS.get(tlv.tag)
    if codec is None:
        raise CsrAttrsError(f"subject {oid.dotted_string} value is not a string type")
    try:
        text = tlv.content.decode(codec)
    except UnicodeDecodeError as exc:
        raise CsrAttrsError(f"subject {oid.dotted_string} value is not text") from exc
    try:
        return x509.NameAttribute(oid, text)
    except ValueError as exc:
        raise CsrAttrsError(f"subject {oid.dotted_string} value: {exc}") from exc


def _name_value_der(attribute: x509.NameAttribute) -> bytes:
    value = attribute.value
    if not isinstance(value, str):
        raise CsrAttrsError("only string subject attributes can go in a template")
    printable = attribute.oid in (NameOID.COUNTRY_NAME, NameOID.SERIAL_NUMBER, NameOID.DN_QUALIFIER)
    tag = 0x13 if printable else 0x0C
    return der.tlv(tag, value.encode("utf-8"))


__all__ = [
    "CsrAttrItem",
    "CsrAttrOid",
    "CsrAttribute",
    "CsrTemplate",
    "ExtensionTemplate",
    "KeyRequest",
    "NameTemplateAttribute",
    "build_csrattrs",
    "csrattrs_warnings",
    "decode_csrattrs",
    "decode_extensions",
    "decode_template",
    "encode_csrattrs",
    "encode_extensions",
    "encode_template",
    "legacy_extension_oids",
    "requested_extensions",
    "requested_key",
    "requested_signature_hash",
    "requested_template",
    "template_attribute",
    "wants_challenge_password",
]
