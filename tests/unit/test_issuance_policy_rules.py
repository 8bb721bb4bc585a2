"""ca/policy.py's rules and file, and codec/names.py's subject parser (no sockets: the
attacks over CoAPs and HTTPS are in tests/integration/test_issuance_policy.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from estcoap.ca.policy import IssuancePolicy, PolicyError, Requester
from estcoap.codec.names import (
    NameSyntaxError,
    format_name,
    parse_name,
    parse_requester,
    requester_text,
)
from estcoap.service import Forbidden

DEVICE = Requester.device(
    x509.NameAttribute(NameOID.SERIAL_NUMBER, "dev-1"),
    source="your IDevID",
    subject=parse_name("serialNumber=dev-1,CN=dev-1"),
)
CN_DEVICE = Requester.device(x509.NameAttribute(NameOID.COMMON_NAME, "cam-9"), source="your IDevID")
ALICE = Requester("user", "alice")
RA = Requester("ra", "factory gateway")


def policy(text: str) -> IssuancePolicy:
    import tomllib

    return IssuancePolicy.from_mapping(tomllib.loads(text), source="test.toml")


def san(*names: x509.GeneralName) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName(list(names))


def test_subjects_as_people_type_them() -> None:
    name = parse_name("serialNumber=dev-1,emailAddress=ops@example.com,cn=a\\,b,O=Acme+OU=Lab")
    assert name.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "dev-1"
    assert name.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)[0].value == "ops@example.com"
    assert name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "a,b"
    assert format_name(parse_name("serialNumber=x,CN=y")) == "serialNumber=x,CN=y"
    assert parse_name("2.5.4.5=x") == parse_name("serialNumber=x")
    for text, says in [
        ("device-1", "expected ATTRIBUTE=VALUE pairs separated by commas"),
        ("colour=red", "unknown attribute 'colour'"),
        ("CN=", "CN has an empty value"),
        ("CN=a\\00b", "CN holds a control character"),
        ("C=DEU", "C: Attribute's length must be >= 2"),
    ]:
        with pytest.raises(NameSyntaxError) as caught:
            parse_name(text)
        assert says in str(caught.value) and "\n" not in str(caught.value)


def test_requester_header_round_trip_and_refusals() -> None:
    identity = x509.NameAttribute(NameOID.SERIAL_NUMBER, "dev 1/ü")
    text = requester_text(identity)
    assert text.isascii() and " " not in text
    assert parse_requester(text) == identity
    for bad in ("O=Acme", "serialNumber=", "serialNumber=a%00b", "nonsense", "CN=%ff"):
        with pytest.raises(NameSyntaxError):
            parse_requester(bad)


def test_a_device_needs_its_identity_exactly_once() -> None:
    rules = IssuancePolicy()
    rules.check(DEVICE, parse_name("serialNumber=dev-1,CN=anything,O=Acme"), None)
    for subject, says in [
        ("CN=dev-1", "subject must carry serialNumber=dev-1 (the identity of your IDevID)"),
        ("serialNumber=dev-1+serialNumber=dev-2", "no other serialNumber; it carries"),
    ]:
        with pytest.raises(Forbidden, match=says.replace("(", r"\(").replace(")", r"\)")):
            rules.check(DEVICE, parse_name(subject), None)
    # an IDevID without serialNumber: its CN is the identity, and no serialNumber may appear
    rules.check(CN_DEVICE, parse_name("CN=cam-9,O=Acme"), None)
    with pytest.raises(Forbidden, match="no other CN"):
        rules.check(CN_DEVICE, parse_name("CN=cam-9+CN=cam-10"), None)
    with pytest.raises(Forbidden, match="must not carry a serialNumber"):
        rules.check(CN_DEVICE, parse_name("CN=cam-9,serialNumber=dev-1"), None)


def test_device_grants_with_placeholders() -> None:
    rules = policy("""
        [[grant]]
        identity = "device:dev-*"
        uri = ["urn:dev:{serialNumber}"]
        dns = ["{identity}.devices.example"]
        ip = ["10.1.0.0/16"]
        email = ["*@devices.example"]
        subject = { CN = ["{serialNumber}"], O = ["Acme"] }
    """)
    subject = parse_name("serialNumber=dev-1,CN=dev-1,O=Acme")
    rules.check(
        DEVICE,
        subject,
        san(
            x509.UniformResourceIdentifier("urn:dev:dev-1"),
            x509.DNSName("DEV-1.devices.example"),
            x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
            x509.RFC822Name("ops@devices.example"),
        ),
    )
    for name in [
        x509.UniformResourceIdentifier("urn:dev:dev-2"),
        x509.DNSName("dev-2.devices.example"),
        x509.IPAddress(ipaddress.ip_address("10.2.0.1")),
        x509.RFC822Name("ops@elsewhere.example"),
        x509.OtherName(x509.ObjectIdentifier("1.3.6.1.5.5.7.8.4"), b"\x05\x00"),
    ]:
        with pytest.raises(Forbidden, match="is not granted to device:dev-1"):
            rules.check(DEVICE, subject, san(name))
    with pytest.raises(Forbidden, match="CN=someone-else is not granted"):
        rules.check(DEVICE, parse_name("serialNumber=dev-1,CN=someone-else"), None)
    # a device the grant does not match gets no SAN at all
    other = Requester.device(x509.NameAttribute(NameOID.SERIAL_NUMBER, "x-1"), source="x")
    with pytest.raises(Forbidden, match=r"\(allowed: none\)"):
        rules.check(other, parse_name("serialNumber=x-1"), san(x509.DNSName("x-1.example")))


def test_a_pattern_never_yields_a_wildcard_name() -> None:
    rules = policy(
        '[[grant]]\nidentity = "user:alice"\ndns = ["*.factory.example"]\nsubject = { "*" = ["*"] }'
    )
    rules.check(ALICE, parse_name("CN=x"), san(x509.DNSName("a.b.factory.example")))
    for bad in ("*.factory.example", ".factory.example", "a..factory.example"):
        with pytest.raises(Forbidden):
            rules.check(ALICE, parse_name("CN=x"), san(x509.DNSName(bad)))


def test_provisioners_default_and_granted_mode() -> None:
    anything = (parse_name("CN=EST Test CA,O=Elsewhere"), san(x509.DNSName("*.example.com")))
    IssuancePolicy().check(ALICE, *anything)
    IssuancePolicy().check(RA, *anything)
    with pytest.raises(
        Forbidden,
        match="subject attribute .* is not granted to user:alice "
        r"\(allowed: none\)",
    ):
        policy('provisioners = "granted"').check(ALICE, *anything)
    with pytest.raises(Forbidden, match="is not granted to ra:factory gateway"):
        policy('provisioners = "granted"').check(RA, *anything)


def test_serverkeygen_is_a_grant() -> None:
    subject = parse_name("serialNumber=dev-1")
    IssuancePolicy().check(DEVICE, subject, None, serverkeygen=True)
    no_devices = policy(
        '[[grant]]\nidentity = "device:*"\nserverkeygen = false\n'
        '[[grant]]\nidentity = "device:dev-1"\nserverkeygen = true'
    )
    no_devices.check(DEVICE, subject, None, serverkeygen=True)  # the second grant gives it
    with pytest.raises(Forbidden, match="serverkeygen is not granted to device:cam-9"):
        no_devices.check(CN_DEVICE, parse_name("CN=cam-9"), None, serverkeygen=True)
    off = policy("serverkeygen = false")
    with pytest.raises(Forbidden, match="serverkeygen is not granted to user:alice"):
        off.check(ALICE, parse_name("CN=x"), None, serverkeygen=True)
    off.check(ALICE, parse_name("CN=x"), None)  # enrollment itself is not affected


def test_limits_hold_even_open() -> None:
    rules = IssuancePolicy.open()
    rules.check(ALICE, parse_name("CN=anything"), None)
    rules.check(None, parse_name("CN=anything"), None)
    ca = parse_name("CN=EST Test CA")
    cases = [
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a\x00b")]), None, "control"),
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a\x85b")]), None, "control"),
        (parse_name("CN=x"), san(x509.UniformResourceIdentifier("urn:a\x1bb")), "control"),
        (parse_name("CN=x"), san(*[x509.DNSName(f"d{i}.e") for i in range(33)]), "at most 32"),
        (parse_name(",".join(f"OU=u{i}" for i in range(17))), None, "at most 16"),
        (ca, None, "the CA's own name"),
    ]
    for subject, names, says in cases:
        with pytest.raises(Forbidden, match=says):
            rules.check(ALICE, subject, names, ca_subject=ca)
    small = policy("max_sans = 1\nmax_subject_attributes = 2")
    with pytest.raises(Forbidden, match="at most 1 are allowed"):
        small.check(ALICE, parse_name("CN=x"), san(x509.DNSName("a.example"), x509.DNSName("b.e")))


def test_policy_file_errors_are_one_line(tmp_path: Path) -> None:
    assert IssuancePolicy.load("open").is_open
    assert policy('mode = "open"').is_open
    for text, says in [
        ('mode = "lax"', "mode must be one of enforce, open"),
        ("max_sans = true", "max_sans must be a int"),
        ("[[grant]]\ndns = []", "identity is required"),
        ('[[grant]]\nidentity = "alice"', "must start with device:, user:, ra: or psk:"),
        ('[[grant]]\nidentity = "user:a"\nip = ["10.0.0.1/8"]', "ip '10.0.0.1/8'"),
        ('[[grant]]\nidentity = "user:a"\nuri = ["urn:{mac}"]', "unknown placeholder {mac}"),
        ('[[grant]]\nidentity = "user:a"\nsubject = { colour = ["red"] }', "unknown subject"),
        ('[[grant]]\nidentity = "user:a"\nother_name = ["hw"]', "not a dotted OID"),
    ]:
        with pytest.raises(PolicyError) as caught:
            policy(text)
        assert says in str(caught.value) and str(caught.value).startswith("test.toml")
    broken = tmp_path / "p.toml"
    broken.write_text("mode = ")
    with pytest.raises(PolicyError, match=f"{broken}: not TOML"):
        IssuancePolicy.load(broken)
    with pytest.raises(PolicyError, match="cannot read it"):
        IssuancePolicy.load(tmp_path / "missing.toml")
