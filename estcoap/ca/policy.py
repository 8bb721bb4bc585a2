"""The issuance policy: what an authenticated requester may have a certificate issued for.

Who asks (a Requester, made by LocalCA from the authenticated Peer):

* a **device**: a client certificate that chains to a trusted anchor (an IDevID from a
  device maker in trust_clients, or a certificate this CA issued), or a device an RA
  vouches for (estcoap/gateway/upstream.py names it in the EST-Requester header). Its identity
  is its certificate's serialNumber, else its CN (RFC 8995 s2.3.1).
* a **user**: a password user of the HTTPS front (HTTP Basic/Digest).
* an **ra**: a Registration Authority certificate this CA issued (`ca issue-ra`) that
  forwards a request without naming a device.

* a **psk**: a device without a certificate that authenticated with a pre-shared key
  (certificate-less first enrollment, RFC 7030 s3.3.3; `estcoap psk add`). The key is
  bound to one subject, the only one it may have, whatever the mode (even `open`): the
  key is all that identifies the device. No subjectAltName unless a grant for
  `psk:<identity>` gives it.

Users and RAs are provisioners: they enroll on behalf of others.

What each may have, by default:

* A device: the subject must carry its identity (`serialNumber=device-0001` when its
  certificate has a serialNumber, else its CN), exactly once; other attributes may be
  present, but never another serialNumber (nor another CN when the CN is the identity).
  No subjectAltName at all.
* A provisioner: any subject and subjectAltName, unless a grant names it (then only what
  its grants give) or the file says `provisioners = "granted"`.
* Server-side key generation: allowed to every requester (`serverkeygen = true`): its
  certificate is bound by the same subject and SAN rules as an enrollment, the key goes
  only to the requester who asked, and RFC 9148 s5 expects constrained devices to use
  it. An operator who wants keys generated on devices only sets `serverkeygen = false`
  at the top, and grants it per identity.

Whatever the policy, even `open`: no control character (NUL, C0, C1, DEL) in any
subject attribute or text subjectAltName, at most `max_sans` (32) subjectAltNames and
`max_subject_attributes` (16) subject attributes, and never the CA's own subject.

The policy file (TOML; docs/policy.md has a worked example):

    mode = "enforce"            # "open": anything goes (a lab); warned about at start
    provisioners = "any"        # or "granted": users and RAs get only what grants give
    serverkeygen = true         # the default for every requester
    max_sans = 32
    max_subject_attributes = 16

    [[grant]]
    identity = "user:alice"     # or a list; `*` matches any run: "device:sensor-*"
    subject = { CN = ["sensor-*"], O = ["Acme"] }   # "*" as a name: any other type
    dns = ["*.factory.example"]
    ip = ["10.1.0.0/16", "2001:db8::1"]
    uri = ["urn:dev:{serialNumber}"]
    email = ["*@factory.example"]
    other_name = ["1.3.6.1.5.5.7.8.4"]              # otherName type OIDs
    serverkeygen = false
    max_sans = 4

Identities are `device:<identity value>`, `user:<name>`, `psk:<PSK identity>` and
`ra:<CN of the RA certificate>`. Grants add up: an identity matched by several gets
the union of what they give; `serverkeygen` is allowed when any matching grant that
sets it says true
(otherwise the top-level default holds); `max_sans` is the largest a matching grant
sets, never above the top-level bound. Patterns match a whole value, `*` standing for
one or more characters other than `*` (so a grant never yields a wildcard name); DNS
names and e-mail domains are compared without regard to case. In patterns,
`{identity}` is the requester's identity value (device identity, user name, RA CN),
and `{serialNumber}` / `{CN}` the attributes of a device's certificate.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from ..codec.names import (
    IDENTITY_ATTRIBUTES,
    attribute_name,
    attribute_oid,
    format_name,
    has_control_characters,
)
from ..service import Forbidden

MODES = ("enforce", "open")
PROVISIONER_DEFAULTS = ("any", "granted")
DEFAULT_MAX_SANS = 32
DEFAULT_MAX_SUBJECT_ATTRIBUTES = 16

_SAN_KINDS = ("dns", "ip", "uri", "email", "other_name")
_GRANT_KEYS = {"identity", "subject", "serverkeygen", "max_sans", *_SAN_KINDS}
_TOP_KEYS = {"mode", "provisioners", "serverkeygen", "max_sans", "max_subject_attributes", "grant"}
_PLACEHOLDERS = ("identity", "serialNumber", "CN")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
# A DNS name as a certificate may carry it: LDH labels (and _), no wildcard, no empty label.
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?"
_DNS_NAME_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_ANY_ATTRIBUTE = "*"


class PolicyError(ValueError):
    """A policy file that cannot be used; str() names the file and what is wrong."""


# ---- who asks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Requester:
    """An authenticated requester as the policy sees it."""

    kind: str  # "device", "user", "ra" or "psk"
    value: str  # device identity value, user name, RA CN, PSK identity
    # A device's identity attribute (serialNumber or CN), and where it comes from.
    identity: x509.NameAttribute | None = None
    source: str = ""
    # A device certificate's subject: {serialNumber} and {CN} in patterns; for a PSK, the
    # subject the key is bound to.
    subject: x509.Name | None = None

    @property
    def name(self) -> str:
        """What grant identity patterns match: device:ID, user:NAME, ra:CN."""
        return f"{self.kind}:{self.value}"

    @property
    def is_device(self) -> bool:
        return self.kind == "device"

    @classmethod
    def device(
        cls,
        identity: x509.NameAttribute,
        *,
        source: str,
        subject: x509.Name | None = None,
    ) -> Requester:
        return cls("device", str(identity.value), identity, source, subject)

    @classmethod
    def psk(cls, identity: str, subject: x509.Name) -> Requester:
        """A device that authenticated with the pre-shared key of this identity, bound to
        this subject."""
        return cls("psk", identity, None, f"PSK identity {identity!r}", subject)

    def placeholders(self) -> dict[str, str]:
        values = {"identity": self.value}
        for oid in IDENTITY_ATTRIBUTES:
            found = self.subject.get_attributes_for_oid(oid) if self.subject else []
            if len(found) == 1:
                values[attribute_name(oid)] = str(found[0].value)
            elif self.identity is not None and self.identity.oid == oid:
                values[attribute_name(oid)] = str(self.identity.value)
        return values


# ---- patterns ------------------------------------------------------------------------


def _pattern_regex(pattern: str, values: Mapping[str, str], star: str) -> str | None:
    """A regex for a whole-value pattern; None when it names a placeholder the requester
    has no value for (the pattern then matches nothing)."""
    out = []
    position = 0
    for match in _PLACEHOLDER_RE.finditer(pattern):
        out.append(_literal(pattern[position : match.start()], star))
        if match.group(1) not in values:
            return None
        out.append(re.escape(values[match.group(1)]))
        position = match.end()
    out.append(_literal(pattern[position:], star))
    return "".join(out)


def _literal(text: str, star: str) -> str:
    return star.join(re.escape(part) for part in text.split("*"))


_TEXT_STAR = "[^*]+"
_DNS_STAR = "[A-Za-z0-9_.-]+"


def _matches(
    value: str,
    patterns: Iterable[str],
    values: Mapping[str, str],
    *,
    star: str = _TEXT_STAR,
    fold: bool = False,
) -> bool:
    for pattern in patterns:
        regex = _pattern_regex(pattern, values, star)
        if regex is not None and re.fullmatch(regex, value, re.IGNORECASE if fold else 0):
            return True
    return False


def _check_placeholders(pattern: str, where: str) -> None:
    for match in _PLACEHOLDER_RE.finditer(pattern):
        if match.group(1) not in _PLACEHOLDERS:
            raise PolicyError(
                f"{where}: unknown placeholder {{{match.group(1)}}} in {pattern!r} "
                f"(known: {', '.join('{' + p + '}' for p in _PLACEHOLDERS)})"
            )


# ---- grants --------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """What the identities matching `identities` may have issued (see the module doc)."""

    identities: tuple[str, ...]
    # attribute OID dotted string (or "*") -> value patterns; None: the grant names none.
    subject: Mapping[str, tuple[str, ...]] | None = None
    dns: tuple[str, ...] = ()
    ip: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    uri: tuple[str, ...] = ()
    email: tuple[str, ...] = ()
    other_name: tuple[str, ...] = ()
    serverkeygen: bool | None = None
    max_sans: int | None = None

    def applies_to(self, requester: Requester) -> bool:
        return _matches(requester.name, self.identities, {})

    def allows_attribute(self, attribute: x509.NameAttribute, values: Mapping[str, str]) -> bool:
        if self.subject is None:
            return False
        patterns = self.subject.get(attribute.oid.dotted_string, self.subject.get(_ANY_ATTRIBUTE))
        return patterns is not None and _matches(str(attribute.value), patterns, values)

    def allows_san(self, name: x509.GeneralName, values: Mapping[str, str]) -> bool:
        if isinstance(name, x509.DNSName):
            return bool(_DNS_NAME_RE.fullmatch(name.value)) and _matches(
                name.value, self.dns, values, star=_DNS_STAR, fold=True
            )
        if isinstance(name, x509.IPAddress):
            address = name.value
            return isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address) and any(
                address.version == net.version and address in net for net in self.ip
            )
        if isinstance(name, x509.UniformResourceIdentifier):
            return _matches(name.value, self.uri, values)
        if isinstance(name, x509.RFC822Name):
            local, at, domain = name.value.rpartition("@")
            return bool(at) and any(
                _matches(local, [p.rpartition("@")[0]], values)
                and _matches(domain, [p.rpartition("@")[2]], values, star=_DNS_STAR, fold=True)
                for p in self.email
                if "@" in p
            )
        if isinstance(name, x509.OtherName):
            return name.type_id.dotted_string in self.other_name
        return False  # directoryName, registeredID: only for provisioners without grants

    def describe_sans(self) -> list[str]:
        return [
            *(f"DNS:{p}" for p in self.dns),
            *(f"IP:{n}" for n in self.ip),
            *(f"URI:{p}" for p in self.uri),
            *(f"email:{p}" for p in self.email),
            *(f"otherName:{p}" for p in self.other_name),
        ]

    def describe_subject(self) -> list[str]:
        if self.subject is None:
            return []
        return [
            f"{_attribute_label(key)}={pattern}"
            for key, patterns in self.subject.items()
            for pattern in patterns
        ]


def _attribute_label(key: str) -> str:
    return key if key == _ANY_ATTRIBUTE else attribute_name(ObjectIdentifier(key))


# ---- the policy ----------------------------------------------------------------------


@dataclass(frozen=True)
class IssuancePolicy:
    """Decides whether a requester may have a subject and SAN issued; see the module doc."""

    mode: str = "enforce"
    provisioners: str = "any"
    serverkeygen: bool = True
    max_sans: int = DEFAULT_MAX_SANS
    max_subject_attributes: int = DEFAULT_MAX_SUBJECT_ATTRIBUTES
    grants: tuple[Grant, ...] = field(default=())
    source: str = "built-in defaults"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PolicyError(f"{self.source}: mode must be one of {', '.join(MODES)}")
        if self.provisioners not in PROVISIONER_DEFAULTS:
            raise PolicyError(
                f"{self.source}: provisioners must be one of {', '.join(PROVISIONER_DEFAULTS)}"
            )
        if self.max_sans < 0 or self.max_subject_attributes < 1:
            raise PolicyError(f"{self.source}: the name limits must be positive")

    @classmethod
    def open(cls) -> IssuancePolicy:
        """Today's lab behaviour: any authenticated requester, any subject and SAN."""
        return cls(mode="open", source="--policy open")

    @property
    def is_open(self) -> bool:
        return self.mode == "open"

    @classmethod
    def load(cls, path: str | Path) -> IssuancePolicy:
        """Read a policy file; `open` (the word, not a file) gives IssuancePolicy.open()."""
        if str(path) == "open":
            return cls.open()
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read it: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{path}: not TOML: {exc}") from None
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "policy") -> IssuancePolicy:
        _no_unknown_keys(data, _TOP_KEYS, source)
        grants_data = data.get("grant", [])
        if not isinstance(grants_data, list):
            raise PolicyError(f"{source}: grants are [[grant]] tables")
        return cls(
            mode=_typed(data, "mode", str, "enforce", source),
            provisioners=_typed(data, "provisioners", str, "any", source),
            serverkeygen=_typed(data, "serverkeygen", bool, True, source),
            max_sans=_typed(data, "max_sans", int, DEFAULT_MAX_SANS, source),
            max_subject_attributes=_typed(
                data, "max_subject_attributes", int, DEFAULT_MAX_SUBJECT_ATTRIBUTES, source
            ),
            grants=tuple(_grant(g, f"{source}: grant {i + 1}") for i, g in enumerate(grants_data)),
            source=source,
        )

    def describe(self) -> str:
        """One line for the start-up log."""
        if self.is_open:
            return f"issuance policy OPEN ({self.source}): any authenticated client gets any name"
        return (
            f"issuance policy from {self.source}: {len(self.grants)} grant(s), provisioners "
            f"{self.provisioners}, at most {self.max_sans} SANs"
        )

    # ---- decisions ---------------------------------------------------------------

    def check(
        self,
        requester: Requester | None,
        subject: x509.Name,
        san: x509.SubjectAlternativeName | None,
        *,
        serverkeygen: bool = False,
        ca_subject: x509.Name | None = None,
        limits_only: bool = False,
    ) -> None:
        """Raise Forbidden, naming what is allowed, unless requester may have this issued.
        requester None: an authenticated peer the policy has no identity for (open only).
        limits_only: the checks that hold whatever the policy (a renewal keeps its names)."""
        names = list(san) if san is not None else []
        self._check_limits(subject, names, ca_subject)
        if requester is not None and requester.kind == "psk" and not limits_only:
            _check_psk_subject(requester, subject)
        if self.is_open or limits_only:
            return
        if requester is None:
            raise Forbidden(
                "no identity to issue for: the client certificate names no serialNumber or CN"
            )
        grants = [g for g in self.grants if g.applies_to(requester)]
        if serverkeygen and not self._serverkeygen_allowed(grants):
            raise Forbidden(
                f"serverkeygen is not granted to {requester.name}; "
                "generate the key on the device and use simpleenroll"
            )
        values = requester.placeholders()
        if requester.is_device:
            self._check_device_subject(requester, subject, grants, values)
        elif requester.kind == "psk":
            pass  # its subject is bound (above); SANs only as grants give
        elif grants or self.provisioners == "granted":
            _check_attributes_granted(requester, subject, grants, values)
        else:
            return  # a provisioner no grant restricts: any subject and SAN
        self._check_sans(requester, names, grants, values)

    def _check_limits(
        self, subject: x509.Name, names: Sequence[x509.GeneralName], ca_subject: x509.Name | None
    ) -> None:
        attributes = list(subject)
        if len(attributes) > self.max_subject_attributes:
            raise Forbidden(
                f"subject has {len(attributes)} attributes; at most "
                f"{self.max_subject_attributes} are allowed"
            )
        if len(names) > self.max_sans:
            raise Forbidden(
                f"CSR asks for {len(names)} subjectAltNames; at most {self.max_sans} are allowed"
            )
        for attribute in attributes:
            if isinstance(attribute.value, str) and has_control_characters(attribute.value):
                raise Forbidden(
                    f"subject {attribute_name(attribute.oid)} holds a control "
                    "character (NUL, C0/C1, DEL); names must be printable"
                )
        for name in names:
            for text in _san_texts(name):
                if has_control_characters(text):
                    raise Forbidden(
                        f"subjectAltName {_san_label(name)} holds a control "
                        "character (NUL, C0/C1, DEL)"
                    )
        if ca_subject is not None and attributes and subject == ca_subject:
            raise Forbidden("subject is the CA's own name; ask for a name of your own")

    def _serverkeygen_allowed(self, grants: Sequence[Grant]) -> bool:
        said = [g.serverkeygen for g in grants if g.serverkeygen is not None]
        return any(said) if said else self.serverkeygen

    def _check_device_subject(
        self,
        requester: Requester,
        subject: x509.Name,
        grants: Sequence[Grant],
        values: Mapping[str, str],
    ) -> None:
        identity = requester.identity
        assert identity is not None
        required = f"{attribute_name(identity.oid)}={identity.value}"
        carried = [str(a.value) for a in subject.get_attributes_for_oid(identity.oid)]
        if carried != [identity.value]:
            why = f"subject must carry {required} (the identity of {requester.source})"
            if carried:
                kind = attribute_name(identity.oid)
                why += f" and no other {kind}; it carries {', '.join(map(_printable, carried))}"
            raise Forbidden(why)
        if identity.oid != NameOID.SERIAL_NUMBER and subject.get_attributes_for_oid(
            NameOID.SERIAL_NUMBER
        ):
            raise Forbidden(f"subject must not carry a serialNumber: your identity is {required}")
        restricting = [g for g in grants if g.subject is not None]
        if not restricting:
            return  # other attributes are the device's to choose
        _check_attributes_granted(requester, subject, restricting, values, identity=identity)

    def _check_sans(
        self,
        requester: Requester,
        names: Sequence[x509.GeneralName],
        grants: Sequence[Grant],
        values: Mapping[str, str],
    ) -> None:
        if not names:
            return
        bounds = [g.max_sans for g in grants if g.max_sans is not None]
        bound = min(max(bounds), self.max_sans) if bounds else self.max_sans
        if len(names) > bound:
            raise Forbidden(
                f"CSR asks for {len(names)} subjectAltNames; {requester.name} "
                f"may have at most {bound}"
            )
        for name in names:
            if not any(g.allows_san(name, values) for g in grants):
                allowed = _listing(g.describe_sans() for g in grants)
                raise Forbidden(
                    f"subjectAltName {_san_label(name)} is not granted to "
                    f"{requester.name} (allowed: {allowed})"
                )

    def template_subject(self, requester: Requester | None) -> x509.Name | None:
        """The subject a device must use (its identity), for the CSR attributes template."""
        if requester is not None and requester.kind == "psk":
            return requester.subject  # bound, whatever the mode
        if self.is_open or requester is None or requester.identity is None:
            return None
        return x509.Name([requester.identity])


def _check_attributes_granted(
    requester: Requester,
    subject: x509.Name,
    grants: Sequence[Grant],
    values: Mapping[str, str],
    *,
    identity: x509.NameAttribute | None = None,
) -> None:
    """Raise Forbidden unless some grant allows each subject attribute.
    identity: a device's own attribute, checked apart (it is the device's by right), so
    passed over here and named in the message as what the subject carries besides."""
    for attribute in subject:
        if identity is not None and attribute.oid == identity.oid:
            continue
        if any(g.allows_attribute(attribute, values) for g in grants):
            continue
        allowed = "allowed: " + _listing(g.describe_subject() for g in grants)
        if identity is not None:
            allowed = f"besides {attribute_name(identity.oid)}={identity.value}, {allowed}"
        raise Forbidden(
            f"subject attribute {_attribute_text(attribute)} is not granted to "
            f"{requester.name} ({allowed})"
        )


def _check_psk_subject(requester: Requester, subject: x509.Name) -> None:
    bound = requester.subject
    assert bound is not None
    if subject != bound:
        raise Forbidden(
            f"subject must be {format_name(bound)} (the subject {requester.source} is "
            f"bound to); the CSR asks for {_printable(format_name(subject)) or 'none'}"
        )


# ---- reading the file ----------------------------------------------------------------


def _no_unknown_keys(data: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise PolicyError(
            f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )


def _typed(data: Mapping[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = data.get(key, default)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PolicyError(f"{where}: {key} must be a {kind.__name__}")
    return value


def _strings(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(f"{where}: {key} must be a list of non-empty strings")
    for pattern in value:
        _check_placeholders(pattern, where)
        if has_control_characters(pattern):
            raise PolicyError(f"{where}: {key} holds a control character")
    return tuple(value)


def _grant(data: Any, where: str) -> Grant:
    if not isinstance(data, dict):
        raise PolicyError(f"{where}: a grant is a table")
    _no_unknown_keys(data, _GRANT_KEYS, where)
    identities = _strings(data, "identity", where)
    if not identities:
        raise PolicyError(f'{where}: identity is required (e.g. "user:alice", "device:*")')
    for identity in identities:
        if identity.partition(":")[0] not in ("device", "user", "ra", "psk"):
            raise PolicyError(
                f"{where}: identity {identity!r} must start with device:, user:, ra: or psk:"
            )
    subject = None
    if "subject" in data:
        if not isinstance(data["subject"], dict):
            raise PolicyError(f"{where}: subject is a table of ATTRIBUTE = [patterns]")
        subject = {}
        for key in data["subject"]:
            oid = None if key == _ANY_ATTRIBUTE else attribute_oid(key)
            if key != _ANY_ATTRIBUTE and oid is None:
                raise PolicyError(f"{where}: unknown subject attribute {key!r}")
            dotted = _ANY_ATTRIBUTE if oid is None else oid.dotted_string
            subject[dotted] = _strings(data["subject"], key, f"{where}: subject")
    networks = []
    for text in _strings(data, "ip", where):
        try:
            networks.append(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            raise PolicyError(f"{where}: ip {text!r}: {exc}") from None
    other_names = _strings(data, "other_name", where)
    for dotted in other_names:
        try:
            ObjectIdentifier(dotted)
        except ValueError:
            raise PolicyError(f"{where}: other_name {dotted!r} is not a dotted OID") from None
    max_sans = data.get("max_sans")
    if max_sans is not None and (not isinstance(max_sans, int) or max_sans < 0):
        raise PolicyError(f"{where}: max_sans must be a non-negative integer")
    serverkeygen = data.get("serverkeygen")
    if serverkeygen is not None and not isinstance(serverkeygen, bool):
        raise PolicyError(f"{where}: serverkeygen must be true or false")
    return Grant(
        identities=identities,
        subject=subject,
        dns=_strings(data, "dns", where),
        ip=tuple(networks),
        uri=_strings(data, "uri", where),
        email=_strings(data, "email", where),
        other_name=other_names,
        serverkeygen=serverkeygen,
        max_sans=max_sans,
    )


# ---- words for diagnostics -----------------------------------------------------------


def _listing(parts: Iterable[list[str]]) -> str:
    items = [item for part in parts for item in part]
    return ", ".join(items) if items else "none"


def _attribute_text(attribute: x509.NameAttribute) -> str:
    return f"{attribute_name(attribute.oid)}={_printable(str(attribute.value))}"


def _printable(text: str) -> str:
    return text if text.isprintable() else repr(text)


def _san_texts(name: x509.GeneralName) -> list[str]:
    if isinstance(name, x509.DNSName | x509.UniformResourceIdentifier | x509.RFC822Name):
        return [name.value]
    if isinstance(name, x509.DirectoryName):
        return [str(a.value) for a in name.value if isinstance(a.value, str)]
    return []


def _san_label(name: x509.GeneralName) -> str:
    if isinstance(name, x509.DNSName):
        return f"DNS:{_printable(name.value)}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{_printable(name.value)}"
    if isinstance(name, x509.RFC822Name):
        return f"email:{_printable(name.value)}"
    if isinstance(name, x509.OtherName):
        return f"otherName:{name.type_id.dotted_string}"
    if isinstance(name, x509.DirectoryName):
        return f"dirName:{_printable(name.value.rfc4514_string())}"
    if isinstance(name, x509.RegisteredID):
        return f"registeredID:{name.value.dotted_string}"
    return type(name).__name__
