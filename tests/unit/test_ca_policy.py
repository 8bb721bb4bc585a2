"""The end-entity profile: serials, what a CSR may ask for, what is copied and what is dropped."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from test_ca_support import enroll_request, make_csr, name, new_ca, user_peer

from estcoap.ca.profile import random_serial, vet_csr
from estcoap.codec.pkcs10 import parse_csr
from estcoap.service import BadRequest, Forbidden

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
HARDWARE_MODULE_NAME = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.4")


@pytest.fixture
async def ca(tmp_path):
    service = new_ca(tmp_path, validity_days=90)
    yield service
    service.close()


def test_serials_are_positive_random_and_fit_16_octets():
    serials = {random_serial() for _ in range(2000)}
    assert len(serials) == 2000
    assert all(0 < s < 2**127 for s in serials)
    # Random, not counting: some serials use the high bits of the 128-bit field.
    assert max(s.bit_length() for s in serials) >= 120


async def test_issued_serial_is_positive_der_integer_within_16_octets(ca):
    cert = (await ca.enroll(enroll_request(make_csr(), user_peer()))).certificates[0]
    der = cert.tbs_certificate_bytes
    # tbs: SEQUENCE { [0] version, INTEGER serial, ... }; find the serial INTEGER after [0].
    version_end = der.index(b"\xa0\x03\x02\x01\x02") + 5
    assert der[version_end] == 0x02
    length = der[version_end + 1]
    content = der[version_end + 2 : version_end + 2 + length]
    assert 1 <= length <= 16
    assert content[0] < 0x80  # positive
    assert int.from_bytes(content, "big") == cert.serial_number


async def test_profile_of_an_issued_certificate(ca):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(key, name("sensor-7"), san=[x509.DNSName("sensor-7.example")])
    (issued,) = (await ca.enroll(enroll_request(csr, user_peer()))).certificates
    issued.verify_directly_issued_by(ca.ca_certificate)
    assert issued.subject == name("sensor-7")
    assert issued.public_key() == key.public_key()
    ext = issued.extensions
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    lifetime = issued.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=89) < lifetime <= dt.timedelta(days=90)


async def test_rsa_key_gets_key_encipherment(ca):
    csr = make_csr(rsa.generate_private_key(65537, 2048))
    cert = (await ca.enroll(enroll_request(csr, user_peer()))).certificates[0]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment


async def test_every_san_form_is_copied(ca):
    hw = x509.OtherName(HARDWARE_MODULE_NAME, bytes.fromhex("3010060a2b0601040183e52901020402a1b2"))
    names = [
        x509.DNSName("dev.example"),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
        x509.UniformResourceIdentifier("urn:dev:ops:32473-Refrigerator-5002"),
        x509.RFC822Name("ops@example.com"),
        hw,
    ]
    cert = (await ca.enroll(enroll_request(make_csr(san=names), user_peer()))).certificates[0]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert list(san.value) == names
    assert not san.critical


async def test_san_is_critical_when_subject_is_empty(ca):
    csr = make_csr(subject=x509.Name([]), san=[x509.DNSName("only-san.example")])
    cert = (await ca.enroll(enroll_request(csr, user_peer()))).certificates[0]
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical


async def test_ca_true_is_refused_and_nothing_is_recorded(ca):
    csr = make_csr(extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)])
    with pytest.raises(Forbidden, match="CA:TRUE"):
        await ca.enroll(enroll_request(csr, user_peer()))
    assert [r.operation for r in ca.store.issued_list()] == ["init"]


async def test_unknown_critical_extension_is_refused(ca):
    ext = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    with pytest.raises(Forbidden, match="unsupported critical extension 1.3.6.1.4.1.55555.1"):
        await ca.enroll(enroll_request(make_csr(extensions=[(ext, True)]), user_peer()))


async def test_extensions_outside_the_policy_are_dropped(ca):
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.2"), b"\x05\x00")
    wants_more = x509.KeyUsage(
        digital_signature=True,
        content_commitment=True,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    csr = make_csr(
        extensions=[
            (unknown, False),
            (wants_more, True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
        ]
    )
    cert = (await ca.enroll(enroll_request(csr, user_peer()))).certificates[0]
    oids = {e.oid for e in cert.extensions}
    assert x509.ObjectIdentifier("1.3.6.1.4.1.55555.2") not in oids
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert not ku.key_cert_sign and not ku.crl_sign and not ku.content_commitment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


async def test_weak_rsa_key_is_refused(ca):
    csr = make_csr(rsa.generate_private_key(65537, 1024))
    with pytest.raises(Forbidden, match="2048"):
        await ca.enroll(enroll_request(csr, user_peer()))


async def test_csr_without_any_identity_is_refused(ca):
    with pytest.raises(BadRequest, match="neither a subject nor a subjectAltName"):
        await ca.enroll(enroll_request(make_csr(subject=x509.Name([])), user_peer()))


def test_rfc9148_sen_vector_keeps_its_hardware_module_name():
    # RFC 9148 A.2: the device asks for a SAN otherName id-on-hardwareModuleName.
    csr = parse_csr((VECTORS / "rfc9148" / "A2-sen-request.csr.der").read_bytes())
    vetted = vet_csr(csr)
    assert vetted.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "Wt1234"
    (other,) = vetted.san.get_values_for_type(x509.OtherName)
    assert other.type_id == HARDWARE_MODULE_NAME
