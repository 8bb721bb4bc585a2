"""LocalCA behind an RA (RFC 7030 s3.7): the id-kp-cmcRA peer vouches for the device.

PoP is the RA's job (tls-unique does not survive the hop), re-enrollment is checked
against the CA's own records instead of the RA's channel, and only a trusted
certificate with the cmcRA EKU gets that treatment.
"""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from test_ca_support import cert_peer, enroll_request, foreign_ca, leaf, make_csr, name, new_ca

from estcoap.ca import Store
from estcoap.ca.ra import issue_ra
from estcoap.service import Certificates, Forbidden, KeyAndCertificate, Unauthenticated
from estcoap.trust import ID_KP_CMC_RA, has_eku

RA_CHANNEL = b"ra-channel-tls-unique"
DEVICE_CHANNEL = b"device-dtls-tls-unique"


@pytest.fixture
async def ca(tmp_path):
    service = new_ca(tmp_path, require_pop=True)
    yield service
    service.close()


@pytest.fixture
def ra(ca):
    return issue_ra(ca.paths.dir, name="gateway RA")


def _device_csr(cn: str = "device-7", key=None, san=None):
    # The device put its own channel's tls-unique in challengePassword.
    return make_csr(key, name(cn), san=san, challenge=base64.b64encode(DEVICE_CHANNEL))


def _cmcra_certificate(issuer_cn: str, cn: str) -> tuple[x509.Certificate, x509.Certificate]:
    """A certificate with the cmcRA EKU from a CA outside this one: (certificate, its CA)."""
    issuer, issuer_key = foreign_ca(issuer_cn)
    cert, _ = leaf(issuer, issuer_key, name(cn))
    with_eku = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
        .add_extension(x509.ExtendedKeyUsage([ID_KP_CMC_RA]), critical=False)
        .sign(issuer_key, cert.signature_hash_algorithm)
    )
    return with_eku, issuer


def test_issue_ra_certificate_carries_cmcra_and_client_auth(ca, ra) -> None:
    assert has_eku(ra.certificate, ID_KP_CMC_RA)
    assert has_eku(ra.certificate, ExtendedKeyUsageOID.CLIENT_AUTH)
    assert not has_eku(ra.certificate, ExtendedKeyUsageOID.SERVER_AUTH)
    ra.certificate.verify_directly_issued_by(ca.ca_certificate)
    assert ca.store.find_issued(ra.certificate.serial_number) is not None


async def test_ra_enroll_skips_pop_of_the_ra_channel(ca, ra) -> None:
    peer = cert_peer(ra.certificate, tls_unique=RA_CHANNEL)
    assert ca.is_ra(peer)
    result = await ca.enroll(enroll_request(_device_csr(), peer))
    assert isinstance(result, Certificates)
    assert result.certificates[0].subject == name("device-7")


async def test_same_csr_from_a_plain_client_fails_pop(ca) -> None:
    # The CA's server certificate has clientAuth but not cmcRA: PoP applies as usual.
    server_cert = x509.load_pem_x509_certificate(ca.paths.server_cert.read_bytes())
    peer = cert_peer(server_cert, tls_unique=RA_CHANNEL)
    assert not ca.is_ra(peer)
    with pytest.raises(Unauthenticated, match="proof-of-possession"):
        await ca.enroll(enroll_request(_device_csr(), peer))


async def test_cmcra_certificate_from_an_untrusted_issuer_is_no_ra(ca) -> None:
    # The cmcRA EKU alone must not make an RA.
    rogue = _cmcra_certificate("Rogue CA", "rogue RA")[0]
    peer = cert_peer(rogue, tls_unique=RA_CHANNEL)
    assert not ca.is_ra(peer)
    with pytest.raises(Unauthenticated):
        await ca.enroll(enroll_request(_device_csr(), peer))


async def test_cmcra_certificate_from_a_device_maker_is_no_ra(tmp_path) -> None:
    """A device maker is trusted to vouch for its devices, not to appoint RAs that
    would skip PoP for any device."""
    maker_ra, maker = _cmcra_certificate("Device maker CA", "maker-made RA")
    service = new_ca(tmp_path, require_pop=True, trust_clients=[maker])
    try:
        peer = cert_peer(maker_ra, tls_unique=RA_CHANNEL)
        assert not service.is_ra(peer)
        # it is still a trusted client, so PoP is checked against its own channel: refused
        with pytest.raises(Unauthenticated, match="proof-of-possession"):
            await service.enroll(enroll_request(_device_csr(), peer))
    finally:
        service.close()


async def test_ra_serverkeygen(ca, ra) -> None:
    peer = cert_peer(ra.certificate, tls_unique=RA_CHANNEL)
    result = await ca.serverkeygen(enroll_request(_device_csr("device-8"), peer))
    assert isinstance(result, KeyAndCertificate)
    assert result.certificates.certificates[0].subject == name("device-8")


async def test_ra_reenroll_renews_a_certificate_this_ca_issued(ca, ra) -> None:
    peer = cert_peer(ra.certificate, tls_unique=RA_CHANNEL)
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName("device-9.example")]
    first = await ca.enroll(enroll_request(_device_csr("device-9", key, san), peer))
    assert isinstance(first, Certificates)
    renewed = await ca.reenroll(enroll_request(_device_csr("device-9", key, san), peer))
    assert isinstance(renewed, Certificates)
    record = ca.store.find_issued(renewed.certificates[0].serial_number)
    assert record is not None and record.operation == "reenroll"
    assert record.kind == "renew"
    assert record.renewed_from == format(first.certificates[0].serial_number, "x")


async def test_ra_reenroll_of_an_unknown_subject_is_forbidden(ca, ra) -> None:
    peer = cert_peer(ra.certificate, tls_unique=RA_CHANNEL)
    with pytest.raises(Forbidden, match="never issued"):
        await ca.reenroll(enroll_request(_device_csr("stranger"), peer))


async def test_ra_reenroll_with_a_changed_san_is_forbidden(ca, ra) -> None:
    peer = cert_peer(ra.certificate, tls_unique=RA_CHANNEL)
    await ca.enroll(enroll_request(_device_csr("device-10", san=[x509.DNSName("a.example")]), peer))
    with pytest.raises(Forbidden, match="subjectAltName"):
        await ca.reenroll(
            enroll_request(_device_csr("device-10", san=[x509.DNSName("b.example")]), peer)
        )


def test_issue_ra_cli_refuses_to_overwrite_and_records(tmp_path, ca) -> None:
    out_cert, out_key = tmp_path / "ra.pem", tmp_path / "ra.key"
    argv = [
        sys.executable,
        "-m",
        "estcoap.cli",
        "ca",
        "issue-ra",
        str(ca.paths.dir),
        "--out-cert",
        str(out_cert),
        "--out-key",
        str(out_key),
        "--hostname",
        "127.0.0.1",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    chain = x509.load_pem_x509_certificates(out_cert.read_bytes())
    assert has_eku(chain[0], ID_KP_CMC_RA) and has_eku(chain[0], ExtendedKeyUsageOID.SERVER_AUTH)
    assert chain[1] == ca.ca_certificate
    assert out_key.stat().st_mode & 0o777 == 0o600
    with Store.open(ca.paths.store, create=False) as store:
        assert store.find_issued(chain[0].serial_number) is not None
    again = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
