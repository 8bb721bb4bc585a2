"""PKCS#10: build_csr() for clients, and specific errors for bad requests."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from estcoap.codec import b64, pkcs10
from estcoap.codec.errors import CsrError
from tests.conftest import require

pytestmark = pytest.mark.timeout(60)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
GOOD = (VECTORS / "rfc9148/A2-sen-request.csr.der").read_bytes()
SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device-1")])
P256 = ec.generate_private_key(ec.SECP256R1())


def openssl_verify(der: bytes) -> str:
    """`openssl req -verify` as an independent check; returns its text dump."""
    result = subprocess.run(
        ["openssl", "req", "-inform", "DER", "-verify", "-noout", "-text"],
        input=der,
        capture_output=True,
        check=True,
    )
    assert b"verify OK" in result.stdout + result.stderr
    return result.stdout.decode()


@pytest.mark.parametrize(
    ("key", "hash_name"),
    [
        (P256, "sha256"),
        (ec.generate_private_key(ec.SECP384R1()), "sha384"),
        (ed25519.Ed25519PrivateKey.generate(), None),
        (rsa.generate_private_key(65537, 2048), "sha256"),
    ],
    ids=["p256", "p384", "ed25519", "rsa2048"],
)
def test_build_csr_signs_with_a_hash_sized_to_the_key(key, hash_name):
    der = pkcs10.build_csr(key, SUBJECT)
    csr = pkcs10.parse_csr(der)
    assert csr.subject == SUBJECT
    assert (csr.signature_hash.name if csr.signature_hash else None) == hash_name
    assert csr.public_key_der == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    require("openssl", "openssl checks the CSR independently")
    openssl_verify(der)


def test_build_csr_with_tls_unique_challenge_password_and_sans():
    challenge = base64.b64encode(bytes(range(12)))  # base64(tls-unique) as RFC 7030 s3.5 puts it
    sans = [
        x509.DNSName("device-1.example"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.7")),
    ]
    der = pkcs10.build_csr(P256, SUBJECT, sans=sans, challenge_password=challenge)
    csr = pkcs10.parse_csr(der)
    assert csr.challenge_password == challenge
    assert list(csr.subject_alt_name) == sans
    require("openssl", "openssl checks the CSR independently")
    text = subprocess.run(
        ["openssl", "asn1parse", "-inform", "DER"], input=der, capture_output=True, check=True
    ).stdout.decode()
    # PrintableString, the type RFC 7030 A.3's request uses.
    assert "PRINTABLESTRING   :" + challenge.decode() in text
    assert "DNS:device-1.example" in openssl_verify(der)


def test_non_printable_challenge_password_becomes_utf8():
    der = pkcs10.build_csr(P256, SUBJECT, challenge_password="pässwort".encode())
    assert pkcs10.parse_csr(der).challenge_password == "pässwort".encode()
    require("openssl", "openssl checks the CSR independently")
    text = subprocess.run(
        ["openssl", "asn1parse", "-inform", "DER"], input=der, capture_output=True, check=True
    ).stdout.decode()
    assert "UTF8STRING" in text


def test_explicit_extensions_win_over_sans():
    san = x509.SubjectAlternativeName([x509.DNSName("from-extensions.example")])
    usage = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    extensions = x509.Extensions(
        [
            x509.Extension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, False, san),
            x509.Extension(ExtensionOID.KEY_USAGE, True, usage),
        ]
    )
    der = pkcs10.build_csr(
        P256, SUBJECT, sans=[x509.DNSName("ignored.example")], extensions=extensions
    )
    csr = pkcs10.parse_csr(der)
    assert csr.subject_alt_name == san
    assert csr.extensions.get_extension_for_class(x509.KeyUsage).critical


def test_build_csr_errors():
    with pytest.raises(CsrError, match="must not be empty"):
        pkcs10.build_csr(P256, SUBJECT, challenge_password=b"")
    with pytest.raises(CsrError, match="cannot build"):
        pkcs10.build_csr(
            ed25519.Ed25519PrivateKey.generate(), SUBJECT, signature_hash=hashes.SHA256()
        )


# -- parsing: accepted forms and the bad-input matrix --------------------------------


def test_accepted_encodings():
    text = b64.encode(GOOD)
    for form in (
        GOOD,
        text,
        text.replace(b"\n", b""),  # RFC 8951: missing line breaks
        text.replace(b"\n", b"\r\n  "),  # any whitespace
        b"-----BEGIN CERTIFICATE REQUEST-----\r\n"
        + text
        + b"-----END CERTIFICATE REQUEST-----\r\n",
        b"-----BEGIN NEW CERTIFICATE REQUEST-----\n"
        + text
        + b"-----END NEW CERTIFICATE REQUEST-----\n",
    ):
        assert pkcs10.parse_csr(form).der == GOOD


def tampered(der: bytes) -> bytes:
    changed = bytearray(der)
    changed[-5] ^= 0x01  # inside the signature BIT STRING
    return bytes(changed)


CERT_DER = (
    x509.CertificateBuilder()
    .subject_name(SUBJECT)
    .issuer_name(SUBJECT)
    .public_key(P256.public_key())
    .serial_number(1)
    .not_valid_before(datetime.datetime(2024, 1, 1))
    .not_valid_after(datetime.datetime(2034, 1, 1))
    .sign(P256, hashes.SHA256())
    .public_bytes(serialization.Encoding.DER)
)

BAD = {
    "empty": (b"", "empty"),
    "whitespace": (b" \r\n\t", "empty"),
    "not ASN.1 nor base64": (b"\xff\xfe\x00garbage", "neither DER, PEM nor base64"),
    "trailing garbage": (GOOD + b"\x00\x01", "2 trailing bytes"),
    "truncated": (GOOD[:-10], "truncated"),
    "bad length": (b"\x30\x80" + GOOD[2:], "indefinite"),
    "a certificate": (CERT_DER, "not a valid PKCS#10"),
    "base64 of junk": (base64.b64encode(b"\x30\x03\x02\x01\x05"), "not a valid PKCS#10"),
    "wrong PEM label": (
        b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "not a CERTIFICATE REQUEST",
    ),
    "truncated PEM": (b"-----BEGIN CERTIFICATE REQUEST-----\n" + b64.encode(GOOD), "truncated"),
    "tampered signature": (tampered(GOOD), "does not verify"),
    "SHA-1 signature": ((VECTORS / "rfc7030/A3-simpleenroll-request.csr.der").read_bytes(), "SHA1"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_csr_is_a_specific_error(case):
    data, message = BAD[case]
    with pytest.raises(CsrError, match=message):
        pkcs10.parse_csr(data)


def test_tampered_csr_still_parses_without_the_signature_check():
    """check_signature=False is how the RFC 7030 SHA-1 examples are read."""
    assert (
        pkcs10.parse_csr(tampered(GOOD), check_signature=False)
        .subject.rfc4514_string()
        .endswith("C=US")
    )


def off_curve_key_csr() -> bytes:
    """A P-256 CSR whose public point is moved off the curve (signature no longer matters)."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = bytearray(
        pkcs10.build_csr(key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev")]))
    )
    point = der.index(b"\x03\x42\x00\x04") + 4  # BIT STRING, uncompressed point
    der[point + 63] ^= 0x01  # the last byte of Y
    return bytes(der)


def test_unchecked_parse_defers_the_public_key_but_still_refuses_an_unusable_one():
    data = off_curve_key_csr()
    with pytest.raises(CsrError, match="public key is unusable"):
        pkcs10.parse_csr(data)
    csr = pkcs10.parse_csr(data, check_signature=False)  # a forwarding proxy's view
    assert csr.subject.rfc4514_string() == "CN=dev"
    with pytest.raises(CsrError, match="public key is unusable"):
        _ = csr.public_key
    with pytest.raises(CsrError, match="public key is unusable"):
        _ = csr.public_key_der


def test_csr_fields_are_read_once():
    key = ec.generate_private_key(ec.SECP256R1())
    csr = pkcs10.parse_csr(
        pkcs10.build_csr(key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev")]))
    )
    assert csr.subject is csr.subject
    assert csr.public_key is csr.public_key
    assert csr.public_key == key.public_key()
