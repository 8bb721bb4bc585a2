"""codec.spki finds the SubjectPublicKeyInfo bytes that cryptography would encode."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from estcoap.codec import der, spki
from estcoap.codec.pkcs10 import build_csr

pytestmark = pytest.mark.timeout(20)
NOW = datetime.datetime.now(datetime.UTC)
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev")])


def _spki_of(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module", params=["ec", "rsa"])
def key(request):
    if request.param == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _certificate(key) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(NAME)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_certificate_and_csr_give_the_encoded_key(key) -> None:
    cert = _certificate(key)
    assert spki.of_certificate(cert.public_bytes(serialization.Encoding.DER)) == _spki_of(key)
    assert spki.of_csr(build_csr(key, NAME)) == _spki_of(key)


def test_a_v1_certificate_without_a_version_field(key) -> None:
    # A v1 TBSCertificate has no [0] version: the key is the sixth element, not the seventh.
    cert = der.read_one(_certificate(key).public_bytes(serialization.Encoding.DER))
    tbs, algorithm, signature = cert.children()
    v1_tbs = der.sequence(f.raw for f in tbs.children()[1:])
    v1 = der.sequence([v1_tbs, algorithm.raw, signature.raw])
    assert spki.of_certificate(v1) == _spki_of(key)


@pytest.mark.parametrize(
    "data", [b"", b"\x30", b"\x30\x85\x00\x00\x00\x00\x01", b"\x04\x00", b"\x30\x03\x02\x01"]
)
def test_garbage_gives_none(data: bytes) -> None:
    assert spki.of_certificate(data) is None
    assert spki.of_csr(data) is None


def _pairs(certs) -> list[tuple[x509.Certificate, bytes]]:
    return [(c, c.public_bytes(serialization.Encoding.DER)) for c in certs]


def test_index_of_key_finds_our_certificate_by_its_encoding(key) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    pairs = _pairs([_certificate(other), _certificate(key)])

    def not_needed() -> bytes:
        raise AssertionError("the encoded key matched: no re-encoding is needed")

    assert spki.index_of_key(pairs, spki.of_csr(build_csr(key, NAME)), not_needed) == 1


def test_index_of_key_compares_by_value_when_the_encodings_differ(key) -> None:
    # As when the CSR carries a compressed EC point and the CA wrote it uncompressed.
    pairs = _pairs([_certificate(ec.generate_private_key(ec.SECP256R1())), _certificate(key)])
    assert spki.index_of_key(pairs, b"another encoding", lambda: _spki_of(key)) == 1
    assert spki.index_of_key(pairs, None, lambda: spki.public_key_der(key)) == 1


def test_index_of_key_is_none_without_our_certificate(key) -> None:
    pairs = _pairs([_certificate(ec.generate_private_key(ec.SECP256R1()))])
    encoded = spki.of_csr(build_csr(key, NAME))
    assert spki.index_of_key(pairs, encoded, lambda: _spki_of(key)) is None
    assert spki.index_of_key(pairs, None, lambda: None) is None
