"""RFC 9908 CertificationRequestInfoTemplate: a partially filled request the server wants
the client to complete (subject with blanks, key algorithm, extensions).

    CertificationRequestInfoTemplate ::= SEQUENCE {
        version       INTEGER { v1(0) },
        subject       NameTemplate OPTIONAL,
        subjectPKInfo [0] IMPLICIT SubjectPublicKeyInfoTemplate OPTIONAL,
        attributes    [1] IMPLICIT Attributes }
    SingleAttributeTemplate ::= SEQUENCE { type OID, value ANY OPTIONAL }
    SubjectPublicKeyInfoTemplate ::= SEQUENCE { algorithm AlgorithmIdentifier,
                                                subjectPublicKey BIT STRING OPTIONAL }
    ExtensionTemplate ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE,
                                     extnValue OCTET STRING OPTIONAL }
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from .. import der
from ..errors import CsrAttrsError
from .extensions import (
    ExtensionTemplate,
    check_extensions_shape,
    decode_extension_templates,
    encode_extension_templates,
    encode_extensions,
)
from .items import (
    OID_CERT_REQ_INFO_TEMPLATE,
    OID_EXTENSION_REQ_TEMPLATE,
    OID_EXTENSION_REQUEST,
    CsrAttribute,
    decode_item,
    read_oid,
    reported,
)
from .keys import KeyRequest, key_from_algorithm, key_to_algorithm


@dataclass(frozen=True)
class NameTemplateAttribute:
    """One subject attribute; value is its DER TLV, or None when the client fills it in."""

    oid: ObjectIdentifier
    value: bytes | None = None


@dataclass(frozen=True)
class CsrTemplate:
    """A partially filled CertificationRequestInfo the server wants the client to complete."""

    subject: tuple[tuple[NameTemplateAttribute, ...], ...] | None = None  # RDNs
    key_algorithm: bytes | None = None  # AlgorithmIdentifier DER
    key_placeholder: bytes | None = None  # subjectPublicKey BIT STRING TLV (RSA size hint)
    attributes: tuple[CsrAttribute, ...] = field(default=())

    @property
    @reported
    def key(self) -> KeyRequest | None:
        if self.key_algorithm is None:
            return None
        return key_from_algorithm(self.key_algorithm, self.key_placeholder)

    @property
    @reported
    def extension_templates(self) -> tuple[ExtensionTemplate, ...]:
        for attribute in self.attributes:
            if attribute.oid == OID_EXTENSION_REQ_TEMPLATE:
                return decode_extension_templates(attribute.values[0])
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
            value = encode_extension_templates(extension_templates)
            attrs.append(CsrAttribute(OID_EXTENSION_REQ_TEMPLATE, (value,)))
        algorithm, placeholder = key_to_algorithm(key) if key else (None, None)
        return cls(
            subject=tuple(rdns) if subject is not None or blank else None,
            key_algorithm=algorithm,
            key_placeholder=placeholder,
            attributes=tuple(attrs),
        )


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
        read_oid(algorithm[0])
        key_algorithm = spki[0].raw
        if len(spki) == 2:
            if not spki[1].is_universal(der.BIT_STRING):
                raise der.DerError("subjectPublicKey must be a BIT STRING")
            key_placeholder = spki[1].raw
    attributes: tuple[CsrAttribute, ...] = ()
    if rest and rest[0].is_context(1) and rest[0].constructed:
        attributes = tuple(decode_item(a) for a in rest.pop(0).children())  # type: ignore[misc]
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
            check_extensions_shape(der.read_one(attribute.values[0]))
        if attribute.oid == OID_EXTENSION_REQ_TEMPLATE:
            if len(attribute.values) != 1:
                raise der.DerError("extensionReqTemplate must hold exactly one value")
            decode_extension_templates(attribute.values[0])


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
            oid = read_oid(parts[0])
            attrs.append(NameTemplateAttribute(oid, parts[1].raw if len(parts) == 2 else None))
        rdns.append(tuple(attrs))
    return tuple(rdns)


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
