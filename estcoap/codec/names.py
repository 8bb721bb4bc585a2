"""Distinguished names as people type them, and a device's identity in one.

parse_name() reads an RFC 4514 string ("serialNumber=dev-1,CN=dev-1,O=Acme") with the
attribute names people use, not only the nine cryptography knows: its parser refuses
`serialNumber=` or `emailAddress=` with an empty message. A name it cannot read gets
a one-line NameSyntaxError saying what is expected.

device_identity() is the identity a certificate names (RFC 8995 s2.3.1: the IDevID's
serialNumber, else its CN); requester header text carries it from an RA to the CA.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

# Attribute type names (RFC 4514 s3, RFC 4519, PKCS#9 emailAddress), matched without
# regard to case; the spelling here is the one diagnostics use.
_ATTRIBUTES: dict[str, ObjectIdentifier] = {
    "CN": NameOID.COMMON_NAME,
    "serialNumber": NameOID.SERIAL_NUMBER,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "L": NameOID.LOCALITY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "street": NameOID.STREET_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "title": NameOID.TITLE,
    "SN": NameOID.SURNAME,
    "GN": NameOID.GIVEN_NAME,
    "initials": NameOID.INITIALS,
    "pseudonym": NameOID.PSEUDONYM,
    "generationQualifier": NameOID.GENERATION_QUALIFIER,
    "dnQualifier": NameOID.DN_QUALIFIER,
    "postalCode": NameOID.POSTAL_CODE,
    "businessCategory": NameOID.BUSINESS_CATEGORY,
    "emailAddress": NameOID.EMAIL_ADDRESS,
}
_ALIASES = {
    "commonname": "CN",
    "organizationname": "O",
    "organizationalunitname": "OU",
    "countryname": "C",
    "localityname": "L",
    "stateorprovincename": "ST",
    "streetaddress": "street",
    "domaincomponent": "DC",
    "userid": "UID",
    "surname": "SN",
    "givenname": "GN",
    "email": "emailAddress",
}
_BY_LOWER = {name.lower(): oid for name, oid in _ATTRIBUTES.items()}
_BY_LOWER.update({alias: _ATTRIBUTES[name] for alias, name in _ALIASES.items()})
_NAME_OF = {oid: name for name, oid in _ATTRIBUTES.items()}

_OID_RE = re.compile(r"(0|[1-9]\d*)(\.(0|[1-9]\d*))+")
_EXAMPLE = '"serialNumber=dev-1,CN=dev-1,O=Acme"'


class NameSyntaxError(ValueError):
    """A name that cannot be read; str() is one line saying what is expected."""


def attribute_name(oid: ObjectIdentifier) -> str:
    """The short name of an attribute type (serialNumber, CN ...), else its dotted OID."""
    return _NAME_OF.get(oid, oid.dotted_string)


def attribute_oid(name: str) -> ObjectIdentifier | None:
    """The attribute type a name (any case, or a dotted OID) stands for, else None."""
    if _OID_RE.fullmatch(name):
        return ObjectIdentifier(name)
    return _BY_LOWER.get(name.lower())


def format_name(name: x509.Name) -> str:
    """RFC 4514 text with the short names above (cryptography writes 2.5.4.5 for
    serialNumber), so that what is printed reads back through parse_name()."""
    return name.rfc4514_string({oid: n for oid, n in _NAME_OF.items()})


def parse_name(text: str) -> x509.Name:
    """An RFC 4514 string, most specific attribute first as RFC 4514 writes it (the
    Name's RDNs come out in the reverse, DER, order); `+` joins attributes of one RDN."""
    stripped = text.strip()
    if not stripped:
        return x509.Name([])
    rdns = []
    for rdn_text in _split(stripped, ","):
        attributes = [_attribute(text, part) for part in _split(rdn_text, "+")]
        rdns.append(x509.RelativeDistinguishedName(attributes))
    return x509.Name(list(reversed(rdns)))


def _split(text: str, separator: str) -> list[str]:
    """Split at separators that are not escaped with a backslash."""
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _attribute(whole: str, text: str) -> x509.NameAttribute:
    kind, sep, raw = text.partition("=")
    kind = kind.strip()
    if not sep or not kind:
        raise NameSyntaxError(
            f"bad subject {whole!r}: expected ATTRIBUTE=VALUE pairs separated by commas, "
            f"e.g. {_EXAMPLE}"
        )
    oid = attribute_oid(kind)
    if oid is None:
        known = ", ".join(_ATTRIBUTES)
        raise NameSyntaxError(
            f"bad subject {whole!r}: unknown attribute {kind!r} (known: {known}, or a dotted OID)"
        )
    value = _unescape(whole, raw.strip())
    if not value:
        raise NameSyntaxError(f"bad subject {whole!r}: {kind} has an empty value")
    if has_control_characters(value):
        raise NameSyntaxError(f"bad subject {whole!r}: {kind} holds a control character")
    try:
        return x509.NameAttribute(oid, value)
    except ValueError as exc:  # e.g. C must be two letters, CN at most 64 characters
        raise NameSyntaxError(f"bad subject {whole!r}: {kind}: {exc}") from None


def _unescape(whole: str, raw: str) -> str:
    """RFC 4514 s2.4 escapes: a backslash before a special character, or two hex digits
    per UTF-8 octet."""
    out = bytearray()
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch != "\\":
            out += ch.encode()
            i += 1
            continue
        pair = raw[i + 1 : i + 3]
        if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
            out.append(int(pair, 16))
            i += 3
        elif len(pair) >= 1:
            out += pair[0].encode()
            i += 2
        else:
            raise NameSyntaxError(f"bad subject {whole!r}: it ends in a lone backslash")
    try:
        return out.decode()
    except UnicodeDecodeError:
        raise NameSyntaxError(f"bad subject {whole!r}: hex escapes that are not UTF-8") from None


def has_control_characters(text: str) -> bool:
    """NUL, other C0 and C1 controls and DEL: never part of a name, and a NUL cuts a
    name short for C code that reads it (the classic "paypal.com\\0.evil" certificate)."""
    return any(unicodedata.category(ch) == "Cc" for ch in text)


# ---- a device's identity ------------------------------------------------------------

# The subject attributes that identify a device, in order of preference: serialNumber
# (RFC 8995 s2.3.1, IDevIDs), else CN.
IDENTITY_ATTRIBUTES = (NameOID.SERIAL_NUMBER, NameOID.COMMON_NAME)


def device_identity(certificate: x509.Certificate) -> x509.NameAttribute | None:
    """What a device certificate identifies: its subject's serialNumber (RFC 8995
    s2.3.1, IDevIDs), else its CN; None when it has neither (or several)."""
    for oid in IDENTITY_ATTRIBUTES:
        found = certificate.subject.get_attributes_for_oid(oid)
        if len(found) == 1 and isinstance(found[0].value, str):
            return found[0]
        if found:
            return None  # two serialNumbers: no single identity to hold the device to
    return None


# The header an RA adds to a forwarded request: the device identity it authenticated.
REQUESTER_HEADER = "EST-Requester"


def requester_text(identity: x509.NameAttribute) -> str:
    """Header text for an identity: ATTRIBUTE=VALUE, the value percent-encoded (a header
    carries ASCII only, and no CR or LF)."""
    return f"{attribute_name(identity.oid)}={quote(str(identity.value), safe='')}"


def parse_requester(text: str) -> x509.NameAttribute:
    """The identity in requester header text. Raises NameSyntaxError."""
    kind, sep, value = text.strip().partition("=")
    oid = attribute_oid(kind) if sep else None
    if oid not in IDENTITY_ATTRIBUTES:
        raise NameSyntaxError(
            f"{REQUESTER_HEADER} must be serialNumber=VALUE or CN=VALUE, got {text[:80]!r}"
        )
    try:
        decoded = unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise NameSyntaxError(f"{REQUESTER_HEADER} value is not UTF-8") from None
    if not decoded or has_control_characters(decoded):
        raise NameSyntaxError(f"{REQUESTER_HEADER} value is empty or holds a control character")
    try:
        return x509.NameAttribute(oid, decoded)
    except ValueError as exc:
        raise NameSyntaxError(f"{REQUESTER_HEADER} value: {exc}") from None
