"""Extensions in csrattrs: the Extensions SEQUENCE of an extensionRequest attribute
(RFC 2985, RFC 9908 s3.3), and the ExtensionTemplate list of an RFC 9908 template."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from .. import der, oids
from ..errors import CsrAttrsError
from .items import OID_EXTENSION_REQUEST, read_oid


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
        check_extensions_shape(der.read_one(data))
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


def check_extensions_shape(extensions: der.Tlv) -> None:
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


@dataclass(frozen=True)
class ExtensionTemplate:
    """One extension; value is the extnValue contents, or None when the client supplies it."""

    oid: ObjectIdentifier
    critical: bool = False
    value: bytes | None = None


def decode_extension_templates(data: bytes) -> tuple[ExtensionTemplate, ...]:
    top = der.read_one(data)
    if not der.is_sequence(top) or not top.content:
        raise der.DerError("ExtensionReqTemplate is a non-empty SEQUENCE OF ExtensionTemplate")
    result = []
    for ext in top.children():
        parts = ext.children() if der.is_sequence(ext) else []
        if not 1 <= len(parts) <= 3:
            raise der.DerError("ExtensionTemplate is SEQUENCE { extnID, critical?, extnValue? }")
        oid = read_oid(parts[0])
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


def encode_extension_templates(templates: Sequence[ExtensionTemplate]) -> bytes:
    parts = []
    for t in templates:
        fields = [der.oid(t.oid.dotted_string)]
        if t.critical:
            fields.append(der.boolean(True))
        if t.value is not None:
            fields.append(der.octet_string(t.value))
        parts.append(der.sequence(fields))
    return der.sequence(parts)
