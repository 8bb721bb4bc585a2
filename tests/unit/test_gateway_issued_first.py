"""The gateway puts the certificate issued for the device's key first (RFC 9148 287
carries only it), whatever order the upstream's PKCS#7 lists the chain in."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from estcoap.codec.pkcs10 import build_csr, parse_csr
from estcoap.gateway.upstream import _issued_for_csr
from estcoap.service import Certificates

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
        answer = _answer(order)
        chosen = _issued_for_csr(answer, csr)
        assert chosen.certificates[0] is issued
        # nothing lost or added, each DER still beside its certificate, the PKCS#7 as sent
        assert sorted(map(id, chosen.certificates)) == sorted(map(id, order))
        assert chosen.raw_certificates == tuple(_der(c) for c in chosen.certificates)
        assert chosen.pkcs7_der == answer.raw_pkcs7
        assert "public_key" not in csr.__dict__  # matched on the encoded key, not loaded


def test_without_a_matching_key_the_first_end_entity_goes_first(setup) -> None:
    ca, _, other, csr_der = setup
    chosen = _issued_for_csr(_answer([ca, other]), parse_csr(csr_der, check_signature=False))
    assert chosen.certificates == (other, ca)
    assert chosen.certificate_der(0) == _der(other)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def _answer(certs) -> Certificates:
    return Certificates(
        tuple(certs), raw_pkcs7=b"as sent", raw_certificates=tuple(_der(c) for c in certs)
    )
