"""The gateway puts the certificate issued for the device's key first (RFC 9148 287
carries only it), whatever order the upstream's PKCS#7 lists the chain in."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estcoap.codec import der
from estcoap.codec.pkcs10 import build_csr, parse_csr
from gateway.upstream import _encoded_spki, _issued_for_csr

pytestmark = pytest.mark.timeout(20)
NOW = datetime.datetime.now(datetime.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(cn: str, key, signer, ca: bool) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name("ca"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def setup():
    ca_key, device_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("ca", ca_key, ca_key, ca=True)
    issued = _cert("dev", device_key, ca_key, ca=False)
    other = _cert("other", other_key, ca_key, ca=False)
    csr = build_csr(device_key, _name("dev"))
    return ca, issued, other, csr


def test_the_certificate_for_the_csr_key_goes_first(setup) -> None:
    ca, issued, other, csr_der = setup
    for order in ([ca, other, issued], [other, issued, ca], [issued, ca]):
        csr = parse_csr(csr_der, check_signature=False)
        chosen = _issued_for_csr(list(order), csr)
        assert chosen[0] is issued
        assert sorted(map(id, chosen)) == sorted(map(id, order))  # nothing lost or added
        assert "public_key" not in csr.__dict__  # matched on the encoded key, not loaded


def test_without_a_matching_key_the_first_end_entity_goes_first(setup) -> None:
    ca, _, other, csr_der = setup
    chosen = _issued_for_csr([ca, other], parse_csr(csr_der, check_signature=False))
    assert chosen == [other, ca]


def test_encoded_spki_matches_cryptography(setup) -> None:
    ca, issued, _, csr_der = setup
    spki = issued.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert _encoded_spki(issued.tbs_certificate_bytes, 1) == spki
    assert _encoded_spki(csr_der, 2, skip=2) == spki
    # A v1 TBSCertificate has no [0] version: the key is the sixth element, not the seventh.
    fields = der.read_all(der.read_one(issued.tbs_certificate_bytes).content)
    v1 = der.sequence(f.raw for f in fields[1:])
    assert _encoded_spki(v1, 1) == spki


@pytest.mark.parametrize(
    "data", [b"", b"\x30", b"\x30\x85\x00\x00\x00\x00\x01", b"\x04\x00", b"\x30\x03\x02\x01"]
)
def test_encoded_spki_of_garbage_is_none(data: bytes) -> None:
    assert _encoded_spki(data, 1) is None
