"""The CA side of revocation without sockets: CRLs as built (crl.py), OCSP answers
(ocsp.py), the revocation pointers in issued certificates, LocalCA.revocation_of, and
CurrentCrl's re-signing rule. The same over real sockets and against openssl:
tests/interop/test_revocation_openssl.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from test_ca_support import enroll_request, make_csr, user_peer

from estcoap.ca import CaPaths, LocalCA, Store
from estcoap.ca.create import issue_ocsp_responder
from estcoap.ca.crl import build_crl, crl_number, parse_duration, refresh_due
from estcoap.ca.ocsp import OcspResponder, Status, store_lookup
from estcoap.ca.profile import Request, random_serial, revocation_pointers, sign_end_entity
from estcoap.ca.revocation_http import CurrentCrl

KEY_COMPROMISE = x509.ReasonFlags.key_compromise


def issue(ca: LocalCA, cn: str, *, extensions: tuple = (), label: str | None = None):  # type: ignore[type-arg]
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = sign_end_entity(
        Request(name, key.public_key(), None),
        ca_cert=ca.ca_certificate,
        ca_key=ca._ca_key,
        serial=random_serial(),
        validity_days=30,
        extensions=extensions,
    )
    ca.store.record_issued(cert, requester="test", operation="enroll", label=label)
    return cert


@pytest.fixture
def ca(ca_dir: Path):
    service = LocalCA.open(ca_dir)
    yield service
    service.close()


# ---- CRLs ---------------------------------------------------------------------------


def test_crl_lists_revocations_with_reason_and_invalidity_date(ca: LocalCA) -> None:
    stolen, retired, other = (issue(ca, f"dev-{i}") for i in range(3))
    when = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
    ca.store.revoke(
        stolen.serial_number, reason=KEY_COMPROMISE, invalidity_date=when, revoked_by="t"
    )
    ca.store.revoke(
        retired.serial_number,
        reason=x509.ReasonFlags.unspecified,
        invalidity_date=None,
        revoked_by="t",
    )
    crl = build_crl(ca.store.revoked_list(), ca_cert=ca.ca_certificate, ca_key=ca._ca_key, number=7)
    assert crl.is_signature_valid(ca.ca_certificate.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca.ca_certificate.subject
    assert crl_number(crl) == 7
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert crl.next_update_utc - crl.last_update_utc >= dt.timedelta(days=7)

    entry = crl.get_revoked_certificate_by_serial_number(stolen.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is KEY_COMPROMISE
    assert (
        entry.extensions.get_extension_for_class(x509.InvalidityDate).value.invalidity_date_utc
        == when
    )  # noqa: E501
    plain = crl.get_revoked_certificate_by_serial_number(retired.serial_number)
    assert plain is not None
    # RFC 5280 s5.3.1: the unspecified reason is better left out.
    with pytest.raises(x509.ExtensionNotFound):
        plain.extensions.get_extension_for_class(x509.CRLReason)
    with pytest.raises(x509.ExtensionNotFound):
        plain.extensions.get_extension_for_class(x509.InvalidityDate)
    assert crl.get_revoked_certificate_by_serial_number(other.serial_number) is None


def test_a_label_crl_lists_that_label_only(ca: LocalCA) -> None:
    mine = issue(ca, "tenant-dev", label="tenant-a")
    theirs = issue(ca, "default-dev")
    for cert in (mine, theirs):
        ca.store.revoke(
            cert.serial_number, reason=KEY_COMPROMISE, invalidity_date=None, revoked_by="t"
        )
    listed = ca.store.revoked_list("tenant-a")
    crl = build_crl(listed, ca_cert=ca.ca_certificate, ca_key=ca._ca_key, number=1)
    assert [entry.serial_number for entry in crl] == [mine.serial_number]
    assert len(ca.store.revoked_list()) == 2


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 7 * 86400), ("12h", 43200), ("30m", 1800), ("90s", 90), ("90", 90), ("2w", 1209600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0", "7x", "-1d", "1.5d", "367d", "7 days"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_duration(text)


def test_current_crl_re_signs_on_revocation_and_at_half_life(ca: LocalCA) -> None:
    now = [dt.datetime.now(dt.UTC)]
    current = CurrentCrl(
        ca.store,
        ca.ca_certificate,
        ca._ca_key,
        next_update=dt.timedelta(hours=2),
        clock=lambda: now[0],
    )
    assert current.refresh() is True
    first = current.crl
    assert first is not None and crl_number(first) == 1 and len(first) == 0
    assert current.refresh() is False  # nothing changed
    cert = issue(ca, "dev")
    # Revoked by another connection, as `ca revoke` in another process would.
    with Store.open(ca.store.path, create=False) as other:
        other.revoke(
            cert.serial_number, reason=KEY_COMPROMISE, invalidity_date=None, revoked_by="t"
        )
    assert current.refresh() is True
    assert current.crl is not None and crl_number(current.crl) == 2
    assert x509.load_der_x509_crl(current.der).get_revoked_certificate_by_serial_number(
        cert.serial_number
    )
    now[0] += dt.timedelta(minutes=50)
    assert not refresh_due(current.crl, now[0]) and current.refresh() is False
    now[0] += dt.timedelta(minutes=20)  # past half of 2 h (+5 min of backdating)
    assert current.refresh() is True and crl_number(current.crl) == 3


# ---- what issued certificates point to, LocalCA.revocation_of ------------------------


def test_issued_certificates_name_the_crl_and_ocsp_urls(ca: LocalCA) -> None:
    pointers = revocation_pointers("http://crl.example/ca.crl", "http://ocsp.example/")
    cert = issue(ca, "dev", extensions=pointers)
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    assert not cdp.critical
    assert [n.value for n in cdp.value[0].full_name] == ["http://crl.example/ca.crl"]  # type: ignore[union-attr]
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(d.access_method, d.access_location.value) for d in aia] == [
        (x509.AuthorityInformationAccessOID.OCSP, "http://ocsp.example/")
    ]
    assert revocation_pointers(None, None) == ()
    assert len(revocation_pointers("http://crl.example/ca.crl", None)) == 1


async def test_local_ca_publishes_pointers_in_what_it_enrolls(ca: LocalCA) -> None:
    ca.publish_revocation(
        crl_url="http://127.0.0.1:8080/crl/ca.crl", ocsp_url="http://127.0.0.1:8081/"
    )
    answer = await ca.enroll(enroll_request(make_csr(), user_peer()))
    cert = answer.certificates[0]  # type: ignore[union-attr]
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == "http://127.0.0.1:8080/crl/ca.crl"  # type: ignore[index]
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert aia[0].access_location.value == "http://127.0.0.1:8081/"
    ca.publish_revocation(crl_url=None, ocsp_url=None)
    plain = (await ca.enroll(enroll_request(make_csr(), user_peer()))).certificates[0]  # type: ignore[union-attr]
    with pytest.raises(x509.ExtensionNotFound):
        plain.extensions.get_extension_for_class(x509.CRLDistributionPoints)


def test_revocation_of_sees_revocations_from_another_process(ca: LocalCA) -> None:
    cert = issue(ca, "dev")
    assert ca.revocation_of(cert) is None
    with Store.open(ca.store.path, create=False) as other:
        other.revoke(
            cert.serial_number, reason=KEY_COMPROMISE, invalidity_date=None, revoked_by="cli:op"
        )
    record = ca.revocation_of(cert)
    assert record is not None and record.reason == "keyCompromise"
    assert record.revoked_by == "cli:op"
    assert ca.revocation_of(cert.serial_number) == record
    assert ca.revocation_of(format(cert.serial_number, "x")) == record
    # A second revocation: the cache catches up by it, keeping the first.
    later = issue(ca, "dev-2")
    assert ca.revocation_of(later) is None
    with Store.open(ca.store.path, create=False) as other:
        other.revoke(
            later.serial_number,
            reason=x509.ReasonFlags.superseded,
            invalidity_date=None,
            revoked_by="cli:op",
        )
    assert ca.revocation_of(later).reason == "superseded"  # type: ignore[union-attr]
    assert ca.revocation_of(cert) == record


def test_revocation_of_a_foreign_certificate_is_none(ca: LocalCA, ca_dir: Path) -> None:
    """Another issuer's certificate with a serial this CA revoked is not revoked by it."""
    cert = issue(ca, "dev")
    ca.store.revoke(cert.serial_number, reason=KEY_COMPROMISE, invalidity_date=None, revoked_by="t")
    key = ec.generate_private_key(ec.SECP256R1())
    maker = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some maker")])
    foreign = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(maker)
        .public_key(key.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .sign(key, hashes.SHA256())
    )
    assert ca.revocation_of(foreign) is None
    assert ca.revocation_of(cert) is not None


# ---- OCSP ------------------------------------------------------------------------------


def ocsp_request(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    nonce: bytes | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def answer(responder: OcspResponder, request: bytes) -> ocsp.OCSPResponse:
    return ocsp.load_der_ocsp_response(responder.respond(request))


@pytest.fixture
def responder(ca: LocalCA) -> OcspResponder:
    return OcspResponder(ca.ca_certificate, ca._ca_key, store_lookup(ca.store))


def test_ocsp_good_revoked_unknown(ca: LocalCA, responder: OcspResponder) -> None:
    good, revoked = issue(ca, "good"), issue(ca, "revoked")
    ca.store.revoke(
        revoked.serial_number, reason=KEY_COMPROMISE, invalidity_date=None, revoked_by="t"
    )
    never = sign_end_entity(  # same issuer name and key, but never recorded
        Request(good.subject, ec.generate_private_key(ec.SECP256R1()).public_key(), None),
        ca_cert=ca.ca_certificate,
        ca_key=ca._ca_key,
        serial=random_serial(),
        validity_days=1,
    )

    reply = answer(responder, ocsp_request(good, ca.ca_certificate))
    assert reply.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert reply.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert reply.serial_number == good.serial_number
    assert (
        reply.responder_key_hash
        == x509.SubjectKeyIdentifier.from_public_key(
            ca.ca_certificate.public_key()  # type: ignore[arg-type]
        ).digest
    )
    ca.ca_certificate.public_key().verify(  # type: ignore[call-arg, union-attr]
        reply.signature,
        reply.tbs_response_bytes,
        ec.ECDSA(reply.signature_hash_algorithm),  # type: ignore[arg-type]
    )
    assert reply.certificates == []
    assert reply.next_update_utc is not None and reply.next_update_utc > reply.this_update_utc

    reply = answer(responder, ocsp_request(revoked, ca.ca_certificate))
    assert reply.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert reply.revocation_reason is KEY_COMPROMISE
    record = ca.store.revocation_of(revoked.serial_number)
    assert record is not None and reply.revocation_time_utc == record.revocation_time

    reply = answer(responder, ocsp_request(never, ca.ca_certificate))
    assert reply.certificate_status is ocsp.OCSPCertStatus.UNKNOWN


def test_ocsp_echoes_the_nonce_and_keeps_the_hash_asked(
    ca: LocalCA, responder: OcspResponder
) -> None:  # noqa: E501
    cert = issue(ca, "dev")
    reply = answer(
        responder, ocsp_request(cert, ca.ca_certificate, nonce=b"n" * 16, algorithm=hashes.SHA256())
    )
    assert reply.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16
    assert isinstance(reply.hash_algorithm, hashes.SHA256)
    assert reply.certificate_status is ocsp.OCSPCertStatus.GOOD
    without = answer(responder, ocsp_request(cert, ca.ca_certificate))
    with pytest.raises(x509.ExtensionNotFound):
        without.extensions.get_extension_for_class(x509.OCSPNonce)


def test_ocsp_refusals(ca: LocalCA, responder: OcspResponder, tmp_path: Path) -> None:
    cert = issue(ca, "dev")
    for garbage in (b"", b"garbage", b"\x30\x03\x02\x01\x00", b"\x30" * 20000):
        reply = answer(responder, garbage)
        assert reply.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    # Another issuer: its name and key hashes are not this CA's.
    other = LocalCA.open(_other_ca(tmp_path))
    try:
        foreign = ocsp_request(other.store.issued_list()[0].certificate, other.ca_certificate)
    finally:
        other.close()
    assert answer(responder, foreign).response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    # Two certificates in one request: cryptography reads one only.
    doubled = _two_requests(ocsp_request(cert, ca.ca_certificate))
    reply = answer(responder, doubled)
    assert reply.response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def _other_ca(tmp_path: Path) -> Path:
    from estcoap.ca import init_ca

    init_ca(tmp_path / "other", ["127.0.0.1"])
    return tmp_path / "other"


def _two_requests(request_der: bytes) -> bytes:
    """The same OCSPRequest with its one Request twice in requestList."""
    from estcoap.codec import der

    outer = der.read_one(request_der)
    tbs = outer.children()[0]
    request_list, *rest = tbs.children()
    (single,) = request_list.children()
    new_list = der.sequence([single.raw, single.raw])
    return der.sequence([der.sequence([new_list, *(r.raw for r in rest)])])


def test_delegated_responder_signs_and_is_sent_along(ca: LocalCA, ca_dir: Path) -> None:
    responder_cert = issue_ocsp_responder(ca_dir)
    paths = CaPaths.of(ca_dir)
    assert paths.ocsp_key.stat().st_mode & 0o777 == 0o600
    assert x509.load_pem_x509_certificate(paths.ocsp_cert.read_bytes()) == responder_cert
    eku = responder_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    responder_cert.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert ca.store.find_issued(responder_cert.serial_number) is not None
    key = serialization.load_pem_private_key(paths.ocsp_key.read_bytes(), None)

    delegated = OcspResponder(
        ca.ca_certificate,
        ca._ca_key,
        store_lookup(ca.store),
        signer_cert=responder_cert,
        signer_key=key,
    )  # type: ignore[arg-type]
    cert = issue(ca, "dev")
    reply = answer(delegated, ocsp_request(cert, ca.ca_certificate))
    assert reply.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert reply.certificates == [responder_cert]
    assert (
        reply.responder_key_hash
        == x509.SubjectKeyIdentifier.from_public_key(
            responder_cert.public_key()  # type: ignore[arg-type]
        ).digest
    )

    with pytest.raises(ValueError, match="OCSPSigning"):
        not_a_responder = ca.store.issued_list()[0].certificate  # the server certificate
        OcspResponder(
            ca.ca_certificate,
            ca._ca_key,
            lambda s: Status(False),
            signer_cert=not_a_responder,
            signer_key=key,
        )  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not belong"):
        OcspResponder(
            ca.ca_certificate,
            ca._ca_key,
            lambda s: Status(False),
            signer_cert=responder_cert,
            signer_key=ca._ca_key,
        )
