"""LocalCA as an EstService: who may enroll, re-enrollment identity rules, PoP, server keygen."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from test_ca_support import (
    cert_peer,
    enroll_request,
    foreign_ca,
    leaf,
    make_csr,
    name,
    new_ca,
    user_peer,
)

from estcoap.codec.csrattrs import (
    OID_CHALLENGE_PASSWORD,
    decode_csrattrs,
    requested_key,
    wants_challenge_password,
)
from estcoap.service import (
    BadRequest,
    Certificates,
    EstService,
    Forbidden,
    KeyAndCertificate,
    KeyFormat,
    NotFound,
    NotSupported,
    Peer,
    Transport,
    Unauthenticated,
)

DECRYPT_KEY_ID = x509.ObjectIdentifier("1.2.840.113549.1.9.16.2.37")
ASYMM_DECRYPT_KEY_ID = x509.ObjectIdentifier("1.2.840.113549.1.9.16.2.54")
OCTET_STRING = 4


@pytest.fixture
def manufacturer():
    return foreign_ca()


@pytest.fixture
async def ca(tmp_path, manufacturer):
    service = new_ca(tmp_path, trust_clients=[manufacturer[0]], labels=["iot"])
    yield service
    service.close()


async def _enroll_device(ca, cn="device-1", san=None):
    key = ec.generate_private_key(ec.SECP256R1())
    result = await ca.enroll(enroll_request(make_csr(key, name(cn), san=san), user_peer()))
    return result.certificates[0], key


def test_is_an_est_service(ca):
    assert isinstance(ca, EstService)
    assert ca.client_trust_anchors() == [ca.trust_clients[0], ca.ca_certificate]


async def test_cacerts_and_labels(ca):
    assert (await ca.cacerts(None)) == Certificates((ca.ca_certificate,))
    assert (await ca.cacerts("iot")).certificates == (ca.ca_certificate,)
    assert ca.has_label(None) and ca.has_label("iot") and not ca.has_label("other")
    with pytest.raises(NotFound, match="other"):
        await ca.cacerts("other")
    with pytest.raises(NotFound):
        await ca.enroll(enroll_request(make_csr(), user_peer(), label="other"))


async def test_csrattrs_asks_for_the_ca_key_type(tmp_path, ca):
    items = decode_csrattrs((await ca.csrattrs(None, user_peer())).der)
    assert not wants_challenge_password(items)
    assert requested_key(items).ec_curve().name == "secp256r1"
    assert x509.ObjectIdentifier("1.2.840.10045.4.3.2") in [getattr(i, "oid", None) for i in items]
    strict = new_ca(tmp_path, require_pop=True)
    try:
        items = decode_csrattrs((await strict.csrattrs(None, user_peer())).der)
        assert wants_challenge_password(items)
        assert OID_CHALLENGE_PASSWORD in [getattr(i, "oid", None) for i in items]
    finally:
        strict.close()


# ---- who may enroll --------------------------------------------------------


async def test_anonymous_enroll_is_unauthenticated(ca):
    with pytest.raises(Unauthenticated):
        await ca.enroll(enroll_request(make_csr(), Peer(Transport.HTTPS, address="127.0.0.1")))


async def test_http_user_enrolls_and_is_recorded(ca):
    csr = make_csr()
    result = await ca.enroll(enroll_request(csr, user_peer("bob"), label="iot"))
    cert = result.certificates[0]
    record = ca.store.find_issued(cert.serial_number)
    assert record.requester == "user:bob"
    assert record.label == "iot"
    assert record.operation == "enroll" and record.kind == "new"
    assert record.csr_sha256 == csr.sha256
    assert record.certificate == cert


async def test_idevid_from_a_trusted_manufacturer_enrolls(ca, manufacturer):
    idevid, _ = leaf(*manufacturer, name("idevid-42"))
    result = await ca.enroll(enroll_request(make_csr(subject=idevid.subject), cert_peer(idevid)))
    record = ca.store.find_issued(result.certificates[0].serial_number)
    assert record.requester == "cert:CN=idevid-42"


async def test_certificate_from_an_unknown_ca_is_refused(ca):
    stranger, _ = leaf(*foreign_ca("Evil CA"), name("idevid-42"))
    with pytest.raises(Unauthenticated, match="does not chain"):
        await ca.enroll(enroll_request(make_csr(), cert_peer(stranger)))


async def test_expired_certificate_is_refused(ca, manufacturer):
    old, _ = leaf(*manufacturer, name("idevid-42"), expired=True)
    with pytest.raises(Unauthenticated):
        await ca.enroll(enroll_request(make_csr(), cert_peer(old)))


# ---- proof-of-possession ---------------------------------------------------


async def test_pop_required_without_challenge_password(tmp_path):
    strict = new_ca(tmp_path, require_pop=True)
    try:
        with pytest.raises(Unauthenticated, match="proof-of-possession required"):
            await strict.enroll(enroll_request(make_csr(), user_peer(tls_unique=b"\x01" * 12)))
    finally:
        strict.close()


async def test_pop_with_this_channels_tls_unique(tmp_path):
    strict = new_ca(tmp_path, require_pop=True)
    tls_unique = bytes(range(12))
    try:
        good = make_csr(challenge=base64.b64encode(tls_unique))
        result = await strict.enroll(enroll_request(good, user_peer(tls_unique=tls_unique)))
        assert isinstance(result, Certificates)
        other_channel = make_csr(challenge=base64.b64encode(b"\xff" * 12))
        with pytest.raises(Unauthenticated, match="proof-of-possession failed"):
            await strict.enroll(enroll_request(other_channel, user_peer(tls_unique=tls_unique)))
    finally:
        strict.close()


async def test_pop_present_is_checked_even_when_optional(ca):
    csr = make_csr(challenge=base64.b64encode(b"\xff" * 12))
    with pytest.raises(Unauthenticated, match="proof-of-possession failed"):
        await ca.enroll(enroll_request(csr, user_peer(tls_unique=b"\x00" * 12)))


# ---- re-enrollment -----------------------------------------------------------


async def test_renew_with_the_same_key(ca):
    san = [x509.DNSName("d1.example")]
    cert, key = await _enroll_device(ca, san=san)
    csr = make_csr(key, cert.subject, san=san)
    renewed = (await ca.reenroll(enroll_request(csr, cert_peer(cert)))).certificates[0]
    assert renewed.serial_number != cert.serial_number
    assert renewed.subject == cert.subject and renewed.public_key() == cert.public_key()
    record = ca.store.find_issued(renewed.serial_number)
    assert record.operation == "reenroll" and record.kind == "renew"
    assert record.renewed_from == format(cert.serial_number, "x")


async def test_rekey_with_a_new_key(ca):
    cert, _ = await _enroll_device(ca)
    new_key = ec.generate_private_key(ec.SECP384R1())
    csr = make_csr(new_key, cert.subject)
    renewed = (await ca.reenroll(enroll_request(csr, cert_peer(cert)))).certificates[0]
    assert renewed.public_key() == new_key.public_key()
    assert ca.store.find_issued(renewed.serial_number).kind == "rekey"


async def test_reenroll_with_another_subject_is_forbidden(ca):
    cert, key = await _enroll_device(ca, "device-1")
    with pytest.raises(Forbidden, match="re-enroll identity mismatch: CSR subject"):
        await ca.reenroll(enroll_request(make_csr(key, name("device-2")), cert_peer(cert)))


async def test_reenroll_with_another_san_is_forbidden(ca):
    cert, key = await _enroll_device(ca, san=[x509.DNSName("a.example")])
    csr = make_csr(key, cert.subject, san=[x509.DNSName("b.example")])
    with pytest.raises(Forbidden, match="re-enroll identity mismatch: CSR subjectAltName"):
        await ca.reenroll(enroll_request(csr, cert_peer(cert)))
    # Dropping the SAN is a change too.
    with pytest.raises(Forbidden, match="subjectAltName"):
        await ca.reenroll(enroll_request(make_csr(key, cert.subject), cert_peer(cert)))


async def test_reenroll_needs_a_certificate(ca):
    with pytest.raises(Unauthenticated):
        await ca.reenroll(enroll_request(make_csr(), user_peer()))


async def test_reenroll_with_a_foreign_certificate_is_forbidden(ca, manufacturer):
    idevid, key = leaf(*manufacturer, name("device-1"))
    with pytest.raises(Forbidden, match="issued by this CA"):
        await ca.reenroll(enroll_request(make_csr(key, idevid.subject), cert_peer(idevid)))


async def test_reenroll_with_an_unrecorded_certificate_is_forbidden(ca):
    # Signed with the CA key but never recorded: the store is the authority.
    ca_key = serialization.load_pem_private_key(ca.paths.ca_key.read_bytes(), None)
    ghost, key = leaf(ca.ca_certificate, ca_key, name("ghost"))
    with pytest.raises(Forbidden, match="not in this CA's records"):
        await ca.reenroll(enroll_request(make_csr(key, ghost.subject), cert_peer(ghost)))


# ---- server-side key generation --------------------------------------------


async def test_serverkeygen_returns_a_key_matching_its_certificate(ca):
    csr = make_csr(ec.generate_private_key(ec.SECP384R1()), name("skg-1"))
    result = await ca.serverkeygen(enroll_request(csr, user_peer()))
    assert isinstance(result, KeyAndCertificate)
    assert result.key_format is KeyFormat.PKCS8
    key = serialization.load_der_private_key(result.private_key, None)
    (cert,) = result.certificates.certificates  # RFC 7030 s4.2.3: the issued cert only
    cert.verify_directly_issued_by(ca.ca_certificate)
    assert cert.public_key() == key.public_key()
    assert cert.public_key() != csr.public_key  # a fresh key, not the CSR's
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert cert.subject == name("skg-1")
    record = ca.store.find_issued(cert.serial_number)
    assert record.operation == "serverkeygen" and record.key_der is None  # not kept


async def test_serverkeygen_follows_an_rsa_request(ca):
    csr = make_csr(rsa.generate_private_key(65537, 2048), name("skg-rsa"))
    result = await ca.serverkeygen(enroll_request(csr, user_peer()))
    key = serialization.load_der_private_key(result.private_key, None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048


async def test_serverkeygen_refuses_a_recipient_key_too_small_before_issuing(ca):
    """A 1024-bit RSA CSR key named as the recipient: refused as 4.00, nothing issued."""
    small = rsa.generate_private_key(65537, 1024)
    recipient_id = x509.SubjectKeyIdentifier.from_public_key(small.public_key()).digest
    csr = make_csr(small, attributes=[(ASYMM_DECRYPT_KEY_ID, recipient_id, OCTET_STRING)])
    with pytest.raises(BadRequest, match="too small"):
        await ca.serverkeygen(enroll_request(csr, user_peer()))
    assert [r.operation for r in ca.store.issued_list()] == ["init"]


@pytest.mark.parametrize(
    ("oid", "refusal", "reason"),
    [
        (DECRYPT_KEY_ID, NotSupported, "shared in advance"),  # no symmetric keys here
        (ASYMM_DECRYPT_KEY_ID, BadRequest, "no key known"),  # names no key we know
    ],
)
async def test_serverkeygen_refuses_encryption_it_cannot_do_before_issuing(
    ca, oid, refusal, reason
):
    csr = make_csr(attributes=[(oid, b"\x01\x02\x03\x04", OCTET_STRING)])
    with pytest.raises(refusal, match=reason):
        await ca.serverkeygen(enroll_request(csr, user_peer()))
    assert [r.operation for r in ca.store.issued_list()] == ["init"]
